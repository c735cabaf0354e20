//! Benchmarks: ratios against a baseline measured in the same run, printed
//! as tables. Not tests: absolute timings on a shared 2-core machine are
//! noisy, so every number here is a median of alternating runs
//! (baseline, treatment, baseline, ...), and claims are made on ratios.
//! See bench/README.md for how to read and reproduce them.

mod clock;
mod conn;
mod dns;
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
        "conn" => conn::run(),
        "dns" => dns::run(),
        "net-delay" => net_delay::run(&args[1..]),
        other => Err(anyhow::anyhow!(
            "unknown benchmark {other:?} (available: net, io, net-delay, clock, conn, dns)"
        )),
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

/// Average run time per call, in ns, of the loaded programs named `name`
/// while `during` runs (with the kernel's run-time statistics on).
pub fn program_ns(name: &str, during: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let snapshot = || {
        aya::programs::loaded_programs()
            .flatten()
            .filter(|p| p.name_as_str() == Some(name))
            .fold((0u128, 0u64), |(t, n), p| (t + p.run_time().as_nanos(), n + p.run_count()))
    };
    let (t0, n0) = snapshot();
    during()?;
    let (t1, n1) = snapshot();
    anyhow::ensure!(n1 > n0, "{name} did not run");
    Ok((t1 - t0) as f64 / (n1 - n0) as f64)
}
