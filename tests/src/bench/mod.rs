//! Benchmarks: ratios against a baseline measured in the same run, printed
//! as tables. Not tests: absolute timings on a shared 2-core machine are
//! noisy, so every number here is a median of alternating runs
//! (baseline, treatment, baseline, ...), and claims are made on ratios.
//! See bench/README.md for how to read and reproduce them.

mod clock;
mod io;
mod net;
mod net_delay;

pub fn main(args: &[String]) -> std::process::ExitCode {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the benchmarks need root (they create namespaces and cgroups)");
        return std::process::ExitCode::from(3);
    }
    let which = args.first().map(String::as_str).unwrap_or("net");
    let result = match which {
        "net" => net::run(),
        "io" => io::run(),
        "clock" => clock::run(),
        "net-delay" => net_delay::run(&args[1..]),
        other => Err(anyhow::anyhow!("unknown benchmark {other:?} (available: net, io, net-delay, clock)")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The median of a sample.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}
