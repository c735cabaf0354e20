//! Traffic tools the tests start inside target cgroups and namespaces (as
//! `chaos-integration helper <tool> ...`), and the parent-side handles that
//! drive them. They measure from outside the mechanism: what a receiver
//! got, what a sender's socket reported.

pub mod conn;
pub mod dns;
pub mod echo;
pub mod hold;
pub mod http;
pub mod io;
pub mod ping;
pub mod tcp;
pub mod udp;

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use crate::fixtures::process::Place;

pub fn main(args: &[String]) -> std::process::ExitCode {
    let result = match args.first().map(String::as_str) {
        Some("udp-sink") => udp::sink(&args[1..]),
        Some("udp-source") => udp::source(&args[1..]),
        Some("udp-flood") => udp::flood(&args[1..]),
        Some("tcp-sink") => tcp::sink(&args[1..]),
        Some("tcp-source") => tcp::source(&args[1..]),
        Some("tcp-stream") => tcp::stream_source(&args[1..]),
        Some("tcp-rate-sink") => tcp::rate_sink(&args[1..]),
        Some("http-server") => http::server(&args[1..]),
        Some("io-calls") => io::calls(&args[1..]),
        Some("conn-calls") => conn::calls(&args[1..]),
        Some("dns-calls") => dns::calls(&args[1..]),
        Some("tcp-echo") => echo::server(&args[1..]),
        Some("tcp-connect") => echo::connect(&args[1..]),
        Some("tcp-chat") => echo::chat(&args[1..]),
        Some("tcp-hold") => hold::hold(&args[1..]),
        Some("tcp-redial") => hold::redial(&args[1..]),
        Some("io-errnos") => io::errnos(&args[1..]),
        other => Err(anyhow::anyhow!("unknown helper {other:?}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helper: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--name value` from an argument list.
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    let i = args.iter().position(|a| a == name).ok_or_else(|| anyhow::anyhow!("missing {name}"))?;
    let v = args.get(i + 1).ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?;
    v.parse().map_err(|e| anyhow::anyhow!("{name} {v}: {e}"))
}

pub fn monotonic_ns() -> u64 {
    chaos::timebase::monotonic_ns()
}

/// This binary, with `helper <tool> args...`.
pub fn command(tool: &str, args: &[String]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.arg("helper").arg(tool).args(args);
    cmd
}

/// A helper that runs until its stdin closes, then prints its JSON result.
pub struct Background {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Background {
    /// Spawn and wait for the helper's `READY` line.
    pub fn start(place: Place<'_>, mut cmd: Command) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = place.spawn(&mut cmd)?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        anyhow::ensure!(line.trim() == "READY", "helper did not start: {line:?}");
        Ok(Self { child, stdin, stdout })
    }

    /// Close stdin and read the result.
    pub fn finish(mut self) -> anyhow::Result<serde_json::Value> {
        drop(self.stdin.take());
        let mut out = String::new();
        self.stdout.read_to_string(&mut out)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        serde_json::from_str(out.trim()).map_err(|e| anyhow::anyhow!("helper output {out:?}: {e}"))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Print `READY`, flushed, for the parent.
pub fn ready() -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "READY")?;
    out.flush()?;
    Ok(())
}

/// True once stdin has reached EOF (checked from a thread).
pub fn stdin_closed() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        f.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    flag
}
