//! Privileged integration tests for chaos, and the traffic helpers they
//! spawn into target cgroups and namespaces.
//!
//! One test file per fault program (`src/tests/`), mirroring
//! `chaos-ebpf/src/`, and one suite every family runs (`safety.rs`: each
//! fault ends by each safety layer on its own). Tests create their own
//! network namespaces, veth pairs and cgroups, drive real traffic, and
//! assert on what is measured outside the mechanism (a receiver's count, a socket's errors, a tool's report).
//! A test that needs a kernel capability this machine lacks is *skipped*
//! with the probe's reason — the same probe `chaos doctor` prints — and
//! reported as *ignored* with that reason (see `harness.rs`).
//!
//! ```text
//! chaos-integration [libtest options: --list, --exact, --skip, --format, ...] [FILTER...]
//! chaos-integration helper <udp-sink|udp-source|udp-flood|tcp-sink|tcp-source|http-server> ...
//! chaos-integration bench <net|net-delay|io|clock>
//! ```

mod bench;
mod fixtures;
mod harness;
mod helpers;
mod stats;
mod tests;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("helper") => return helpers::main(&args[1..]),
        Some("bench") => return bench::main(&args[1..]),
        _ => {}
    }
    harness::main(&args, tests::ALL)
}
