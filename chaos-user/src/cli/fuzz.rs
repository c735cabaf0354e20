//! Property test: no command line panics chaos. Random command lines are
//! built from the real command tree (every subcommand, every flag and
//! positional), with values that are valid samples, samples mutated, or
//! random text, and go through clap's value parsers (durations, percents,
//! rates, CIDRs, ports, errno names, offsets, clocks, `--set`, addresses,
//! numbers) and then through the checks an attack's flags get after clap
//! (`fault()`), which run before anything is touched. The value types'
//! parsers are also fed directly, for throughput.
//!
//! `cargo test` runs a short pass; `CHAOS_FUZZ_CASES=1000000 cargo test
//! --release -p chaos-user fuzz -- --nocapture` the long one (README,
//! "Fuzzing").

use std::panic::{AssertUnwindSafe, catch_unwind};

use clap::{CommandFactory, FromArgMatches};

use super::{Cli, Command};
use crate::{
    experiment::vars::parse_set,
    faults::{
        clock::{Offset, SkewClock},
        io::{Errno, IoOp},
    },
    units::{AttackDuration, Cidr, Percent, Rate, parse_duration},
};

/// Cases for a fuzz loop: `CHAOS_FUZZ_CASES` if set, else `default`.
pub(crate) fn cases(default: usize) -> usize {
    std::env::var("CHAOS_FUZZ_CASES").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// splitmix64: deterministic, so that a failure replays.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// Valid values, by the flag's value name.
const SAMPLES: &[(&str, &[&str])] = &[
    ("DURATION", &["30s", "500ms", "1h30m", "1.5s", "24h", "2m", "100us"]),
    ("PERCENT", &["5", "0.5", "5%", "100", "0", "99.9999999"]),
    ("CIDR", &["10.0.0.0/8", "2001:db8::/32", "192.168.1.1", "::/0"]),
    ("PORT", &["80", "65535", "1"]),
    ("RATE", &["10mbit", "1.5gbit", "500kbit", "100Mbit/s", "1bit"]),
    ("ERRNO", &["ENOSPC", "EIO", "28", "eacces", "133"]),
    ("OFFSET", &["+90s", "-2h", "+400d", "-1h30m", "+250ms"]),
    ("CLOCKS", &["realtime", "tai", "realtime,tai", "monotonic"]),
    ("NAME=VALUE", &["loss=5", "target=/a", "duration=1m", "x="]),
    ("ADDR", &["127.0.0.1:9464", "[::1]:0", "0.0.0.0:80"]),
    ("PATH", &["/sys/fs/cgroup/x", "/x", "a/b", "/"]),
    ("PID", &["1", "4242", "-1"]),
    ("N", &["0", "3", "18446744073709551615"]),
    ("OPS", &["write", "read,write", "open"]),
    ("DIST", &["normal", "uniform", "pareto"]),
    ("FILE", &["experiments/lossy-link.yaml", "/nonexistent.yaml"]),
    ("DIR", &["/nonexistent-dir"]),
    ("DEV", &["eth0", "lo"]),
];

/// Pieces that parsers of these values trip on: units, signs, separators,
/// huge and special numbers, non-ASCII (byte-index slicing), empties.
const TOKENS: &[&str] = &[
    "",
    "-",
    "+",
    ".",
    "..",
    "%",
    "/",
    "/s",
    ":",
    "::",
    "=",
    ",",
    "e",
    "E",
    "ns",
    "us",
    "µs",
    "ms",
    "s",
    "m",
    "h",
    "d",
    "bit",
    "kbit",
    "mbit",
    "gbit",
    "tbit",
    "bps",
    "kb",
    "0",
    "1",
    "9",
    "00",
    "4294967296",
    "18446744073709551616",
    "99999999999999999999999",
    "1e308",
    "NaN",
    "inf",
    "-0",
    "0.",
    ".5",
    "1.2.3",
    " ",
    "\t",
    "é",
    "µ",
    "😀",
    "\u{0}",
    "[",
    "]",
    "ENOSPC",
    "E",
    "0x1f",
    "255.255.255.255",
    "/33",
    "/129",
    "/-1",
    "realtime",
    "tai",
    "${x}",
    "$",
    "{",
    "}",
    "\"",
    "'",
    "\\",
];

/// A value: valid, mutated from a valid one, or random.
fn value(rng: &mut Rng, name: &str) -> String {
    let samples = SAMPLES.iter().find(|(n, _)| *n == name).map_or(&["x"][..], |(_, s)| s);
    match rng.below(10) {
        0..=3 => rng.pick(samples).to_owned(),
        4..=7 => {
            let mut chars: Vec<char> = rng.pick(samples).chars().collect();
            for _ in 0..=rng.below(3) {
                let at = rng.below(chars.len() + 1);
                match rng.below(4) {
                    0 if !chars.is_empty() => {
                        chars.remove(at.min(chars.len() - 1));
                    }
                    1 => chars.truncate(at),
                    _ => {
                        for (i, c) in rng.pick(TOKENS).chars().enumerate() {
                            chars.insert(at + i, c);
                        }
                    }
                }
            }
            chars.into_iter().collect()
        }
        8 => (0..rng.below(6)).map(|_| rng.pick(TOKENS)).collect(),
        _ => (0..rng.below(24)).map(|_| char::from_u32(rng.below(0x300) as u32).unwrap_or('?')).collect(),
    }
}

/// Every leaf command: its path (`attack net-loss`) and its arguments as
/// (long flag or None for a positional, value name or None for a switch,
/// required).
type Leaf = (Vec<String>, Vec<(Option<String>, Option<String>, bool)>);

fn leaves(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Leaf>) {
    if cmd.has_subcommands() {
        for sub in cmd.get_subcommands() {
            let mut p = path.clone();
            p.push(sub.get_name().to_owned());
            leaves(sub, p, out);
        }
        return;
    }
    let args = cmd
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .map(|a| {
            let takes = a.get_num_args().is_none_or(|n| n.takes_values()) && !is_switch(a);
            let name = a.get_value_names().and_then(|v| v.first()).map(|v| v.to_string());
            let name =
                if takes { Some(name.unwrap_or_else(|| a.get_id().as_str().to_uppercase())) } else { None };
            (a.get_long().map(str::to_owned), name, a.is_required_set())
        })
        .collect();
    out.push((path, args));
}

fn is_switch(a: &clap::Arg) -> bool {
    matches!(
        a.get_action(),
        clap::ArgAction::SetTrue | clap::ArgAction::SetFalse | clap::ArgAction::Count | clap::ArgAction::Help
    )
}

/// One random command line for `leaf`.
fn command_line(rng: &mut Rng, leaf: &Leaf) -> Vec<String> {
    let mut argv = vec!["chaos".to_owned()];
    argv.extend(leaf.0.iter().cloned());
    let mut args: Vec<_> = leaf.1.iter().collect();
    // Order varies too.
    for i in (1..args.len()).rev() {
        args.swap(i, rng.below(i + 1));
    }
    for (long, name, required) in args {
        let keep = if *required { rng.below(10) < 9 } else { rng.below(10) < 4 };
        if !keep {
            continue;
        }
        // Choosing the target by cgroup most of the time lets more lines parse.
        let name = match (long.as_deref(), name) {
            (Some("pid"), _) if rng.below(3) > 0 => continue,
            (_, Some(n)) => Some(value(rng, n)),
            (_, None) => None,
        };
        match (long, name) {
            (Some(l), Some(v)) if rng.below(2) == 0 => argv.push(format!("--{l}={v}")),
            (Some(l), Some(v)) => argv.extend([format!("--{l}"), v]),
            (Some(l), None) => argv.push(format!("--{l}")),
            (None, Some(v)) => argv.push(v),
            (None, None) => {}
        }
    }
    if !argv.iter().any(|a| a.starts_with("--cgroup") || a.starts_with("--pid")) && rng.below(4) > 0 {
        argv.extend(["--cgroup".to_owned(), "/x".to_owned()]);
    }
    argv
}

/// What chaos does with a parsed command line before touching anything.
fn check_parsed(cli: &Cli) {
    if let Command::Attack(a) = &cli.command {
        let _ = a.build();
    }
}

/// Every value type's parser, fed directly.
fn parse_values(text: &str) {
    let _ = parse_duration(text);
    let _ = text.parse::<AttackDuration>();
    let _ = text.parse::<Percent>().map(Percent::threshold);
    let _ = text.parse::<Cidr>().map(|c| c.to_string());
    let _ = text.parse::<Rate>().map(|r| r.to_string());
    let _ = text.parse::<Errno>().map(|e| e.to_string());
    let _ = text.parse::<Offset>().map(Offset::split);
    let _ = text.parse::<SkewClock>();
    let _ = text.parse::<IoOp>();
    let _ = parse_set(text);
}

#[test]
fn fuzz_command_lines_never_panic() {
    let n = cases(20_000);
    let cmd = Cli::command();
    let mut all = Vec::new();
    leaves(&cmd, Vec::new(), &mut all);
    assert!(all.len() >= 10, "{} leaf commands", all.len());
    let mut rng = Rng(0x5EED_CA05);
    let (mut parsed, mut panics) = (0usize, Vec::new());
    for i in 0..n {
        let argv = command_line(&mut rng, &all[i % all.len()]);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let Ok(m) = cmd.clone().try_get_matches_from(&argv) else { return false };
            let Ok(cli) = Cli::from_arg_matches(&m) else { return false };
            check_parsed(&cli);
            true
        }));
        match outcome {
            Ok(ok) => parsed += usize::from(ok),
            Err(_) => panics.push(argv),
        }
    }
    // Many lines must get through clap, or `fault()` is never exercised.
    assert!(parsed * 20 > n, "only {parsed} of {n} command lines parsed");
    println!("fuzz: {n} command lines ({parsed} parsed), {} panics", panics.len());
    assert!(
        panics.is_empty(),
        "{} command lines panicked, e.g. {:?}",
        panics.len(),
        &panics[..panics.len().min(5)]
    );
}

#[test]
fn fuzz_value_parsers_never_panic() {
    let n = cases(50_000);
    let mut rng = Rng(0xF00D);
    let names: Vec<&str> = SAMPLES.iter().map(|(n, _)| *n).collect();
    let mut panics = Vec::new();
    for _ in 0..n {
        let name = rng.pick(&names);
        let text = value(&mut rng, name);
        if catch_unwind(|| parse_values(&text)).is_err() {
            panics.push(text);
        }
    }
    println!("fuzz: {n} values, {} panics", panics.len());
    assert!(panics.is_empty(), "{} values panicked, e.g. {:?}", panics.len(), &panics[..panics.len().min(5)]);
}
