//! `chaos attack net-reset`: the target's TCP connections reset, seen by
//! the sockets at both ends — the target's fail with ECONNABORTED, the
//! peer's with ECONNRESET — with the target's other connections, and a
//! sibling cgroup's to the same server, untouched; again every interval
//! with `--every`; at the configured share; and never after the attack,
//! however chaos ended.
//!
//! ```text
//!   netns a 10.82.0.1 (target, sibling) ── veth ── netns b 10.82.0.2 (servers)
//! ```

use std::{net::SocketAddr, time::Duration};

use chaos::capabilities::Capability;
use serde_json::Value;

use super::safety::GRACE_NS;
use crate::{
    fixtures::{
        cgroup::Cgroup,
        pair::Pair,
        runner::{self, ChaosRun},
    },
    harness::Ctx,
    helpers::{
        echo::Echo,
        hold::{Hold, Redial, Redialed},
        monotonic_ns,
    },
    stats,
};

const MS: u64 = 1_000_000;

/// `chaos attack net-reset` on the target with `flags`, started and in
/// force (its first sweep done).
fn attack(net: &Pair, flags: &[&str]) -> anyhow::Result<(ChaosRun, u64)> {
    let mut args = vec!["attack", "net-reset", "--cgroup", &net.target.rel];
    args.extend_from_slice(flags);
    let mut run = ChaosRun::start(&args)?;
    run.wait_event("start", Duration::from_secs(60))?;
    Ok((run, monotonic_ns()))
}

fn b(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 82, 0, 2], port))
}

fn require(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require(Capability::SockDestroy)
}

/// The stop event's counters, or why there are none.
fn counters(ended: &runner::Ended) -> anyhow::Result<Value> {
    let stop = ended.event("stop").ok_or_else(|| {
        anyhow::anyhow!("no stop event (exit {:?}); chaos said:\n{}", ended.status, ended.stderr)
    })?;
    Ok(stop["counters"].clone())
}

/// One sweep with `--port 7001 --cidr 10.82.0.2`: the target's six
/// connections to b:7001 fail with ECONNABORTED and b's ends with
/// ECONNRESET; the target's three to b:7002 and the sibling's three to
/// b:7001 still carry data afterwards; chaos counted six resets.
pub fn resets_both_ends_of_matching_connections(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let net = Pair::new("rst", &[])?;
    let (echo1, echo2) = (Echo::start(net.b(), b(7001))?, Echo::start(net.b(), b(7002))?);
    let hit = Hold::start(net.target(), b(7001), 6)?;
    let other_port = Hold::start(net.target(), b(7002), 3)?;
    let sibling = Hold::start(net.sibling(), b(7001), 3)?;
    let (run, _) = attack(&net, &["--port", "7001", "--cidr", "10.82.0.2", "--duration", "2s"])?;
    let ended = run.wait(Duration::from_secs(30))?;
    let (hit, other_port, sibling) = (hit.finish()?, other_port.finish()?, sibling.finish()?);
    let ((_, reset1), (_, reset2)) = (echo1.finish()?, echo2.finish()?);
    let c = counters(&ended)?;
    anyhow::ensure!(
        hit.ended("ConnectionAborted") == 6 && hit.total_ended() == 6,
        "the target's 6 connections to the port should have failed with ECONNABORTED: {hit:?}"
    );
    anyhow::ensure!(reset1 == 6, "the server saw {reset1} resets on port 7001, not 6");
    anyhow::ensure!(
        other_port.alive == 3 && reset2 == 0,
        "the target's connections to another port were touched: {other_port:?}, {reset2} resets"
    );
    anyhow::ensure!(sibling.alive == 3, "the sibling's connections were touched: {sibling:?}");
    anyhow::ensure!(c["injected"] == 6 && c["matched"] == 6 && c["sweeps"] == 1, "chaos's counters: {c}");
    eprint!("[6 aborted at the target, 6 resets at the server, 6 others alive] ");
    Ok(())
}

/// `--percent 30`, one sweep over 200 connections: the resets are a
/// binomial share (its central 1 - 1e-6 interval), and the counts of
/// the target's aborts, the server's resets and chaos's counter agree.
pub fn resets_the_configured_share(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let net = Pair::new("rst", &[])?;
    let echo = Echo::start(net.b(), b(7001))?;
    let n = 200;
    let hold = Hold::start(net.target(), b(7001), n)?;
    let (run, _) = attack(&net, &["--percent", "30", "--duration", "1s"])?;
    let ended = run.wait(Duration::from_secs(30))?;
    let held = hold.finish()?;
    let (_, resets) = echo.finish()?;
    let c = counters(&ended)?;
    let aborted = held.ended("ConnectionAborted");
    // One chance in a million for an exact mechanism: no retry needed.
    let (lo, hi) = stats::interval(n as u64, 0.30, 1e-6);
    anyhow::ensure!(
        (lo..=hi).contains(&aborted),
        "{aborted} of {n} connections reset at 30%: outside {lo}..={hi}"
    );
    anyhow::ensure!(
        held.total_ended() == aborted && held.alive == n as u64 - aborted,
        "the other connections should carry data: {held:?}"
    );
    anyhow::ensure!(resets == aborted, "the server saw {resets} resets, the target {aborted} aborts");
    anyhow::ensure!(c["injected"] == aborted && c["matched"] == n as u64, "chaos's counters: {c}");
    eprint!("[{aborted} of {n} reset at 30% (bounds {lo}..={hi})] ");
    Ok(())
}

/// A client that reconnects after each failure, attacked with `--every
/// 250ms` for 3 s: it fails once per sweep (chaos's count of resets is the
/// client's count of failures, each ECONNABORTED), then talks on
/// undisturbed after the deadline.
pub fn resets_every_interval_until_the_deadline(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let net = Pair::new("rst", &[])?;
    let echo = Echo::start(net.b(), b(7001))?;
    let client = Redial::start(net.target(), b(7001))?;
    let launched = monotonic_ns();
    let (run, seen) = attack(&net, &["--every", "250ms", "--duration", "3s"])?;
    let ended = run.wait(Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(1500));
    let r = client.finish()?;
    echo.finish()?;
    let c = counters(&ended)?;
    let (from_ns, to_ns) = (launched + 3000 * MS, seen + 3000 * MS);
    let sweeps = c["sweeps"].as_u64().unwrap_or(0);
    anyhow::ensure!(
        r.failures.iter().all(|(_, kind)| kind == "ConnectionAborted"),
        "failures other than ECONNABORTED: {:?}",
        r.failures
    );
    anyhow::ensure!(
        c["injected"] == r.failures.len() as u64,
        "chaos counted {} resets, the client {} failures",
        c["injected"],
        r.failures.len()
    );
    // 12 sweeps in 3 s (one at the start); a loaded machine delays some,
    // never adds one.
    anyhow::ensure!((4..=12).contains(&sweeps), "{sweeps} sweeps in 3 s every 250 ms");
    // Each sweep finds the client's connection unless it is between two
    // (it reconnects within milliseconds of a failure).
    anyhow::ensure!(
        2 * r.failures.len() as u64 >= sweeps,
        "{} failures in {sweeps} sweeps: sweeps missed the client's new connections",
        r.failures.len()
    );
    ensure_ended(&r, from_ns, to_ns, "at the deadline")?;
    eprint!("[{} resets in {sweeps} sweeps] ", r.failures.len());
    Ok(())
}

/// The sweeps stop with the loader: `kill -9` during an attack of 60 s,
/// and a loader stopped (SIGSTOP) across its deadline and then continued,
/// whose thread checks the deadline before it acts again.
pub fn ends_with_a_killed_or_hung_loader(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let net = Pair::new("rst", &[])?;
    let echo = Echo::start(net.b(), b(7001))?;

    let client = Redial::start(net.target(), b(7001))?;
    let (run, _) = attack(&net, &["--every", "200ms", "--duration", "60s"])?;
    std::thread::sleep(Duration::from_millis(1000));
    let exit = run.watch_exit(Duration::from_secs(10))?;
    run.signal(libc::SIGKILL);
    let exited = exit.join().map_err(|_| anyhow::anyhow!("exit watcher panicked"))?;
    let exited = exited.ok_or_else(|| anyhow::anyhow!("chaos did not exit after kill -9"))?;
    std::thread::sleep(Duration::from_millis(1500));
    let r = client.finish()?;
    drop(run);
    ensure_ended(&r, exited, exited, "after kill -9")?;

    let client = Redial::start(net.target(), b(7001))?;
    let launched = monotonic_ns();
    let (run, seen) = attack(&net, &["--every", "200ms", "--duration", "2s"])?;
    std::thread::sleep(Duration::from_millis(1000));
    run.signal(libc::SIGSTOP);
    // Past the deadline, stopped; then continued: it must not act again.
    std::thread::sleep(Duration::from_millis(2500));
    run.signal(libc::SIGCONT);
    let ended = run.wait(Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(1000));
    let r = client.finish()?;
    echo.finish()?;
    counters(&ended)?;
    ensure_ended(&r, launched + 2000 * MS, seen + 2000 * MS, "with the loader stopped across its deadline")
}

/// The client failed during the attack, and not after it: no failure
/// later than `to_ns` + [`GRACE_NS`] (the time for the client to notice a
/// reset made at `to_ns`), and round trips after it.
fn ensure_ended(r: &Redialed, from_ns: u64, to_ns: u64, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!r.failures.is_empty(), "{what}: the client never failed: the attack did nothing");
    let late: Vec<i64> = r
        .failures
        .iter()
        .filter(|(t, _)| *t > to_ns + GRACE_NS)
        .map(|(t, _)| (*t as i64 - to_ns as i64) / MS as i64)
        .collect();
    anyhow::ensure!(late.is_empty(), "{what}: failures {late:?} ms after the fault had to end");
    let after = r.done.iter().filter(|&&t| t > to_ns + GRACE_NS).count();
    anyhow::ensure!(after >= 10, "{what}: only {after} round trips after the end");
    // From the latest the fault may end (`from_ns` is the earliest): the
    // deadline lies between them, by when chaos's start was seen.
    let last = r.failures.iter().map(|(t, _)| *t).max().unwrap_or(0);
    eprint!(
        "[{what}: last reset {} ms before the latest end, {} ms after the earliest] ",
        (to_ns as i64 - last as i64) / MS as i64,
        (last as i64 - from_ns as i64) / MS as i64
    );
    Ok(())
}

/// Refusals: exit 3, the flag named, nothing done.
pub fn bad_flags_are_refused(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let target = Cgroup::new("rst-flags")?;
    let many: Vec<String> = (0..65).map(|i| format!("10.9.{i}.0/24")).collect();
    let many: Vec<&str> = many.iter().flat_map(|c| ["--cidr", c.as_str()]).collect();
    let cases: &[(&[&str], &str)] = &[
        (&["--percent", "0"], "--percent 0"),
        (&["--percent", "101"], "outside 0..100"),
        (&["--every", "5ms"], "at least 10ms"),
        (&["--every", "5"], "no unit"),
        (&["--port", "0"], "not a port"),
        (&["--cidr", "10.0.0.0/33"], "prefix length"),
        (&many, "at most 64"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["attack", "net-reset", "--cgroup", &target.rel, "--duration", "10s"];
        args.extend_from_slice(flags);
        runner::run(&args)?.refused(&format!("{:?}", flags.first()), says)?;
    }
    Ok(())
}

/// Python's own HTTP server in b (HTTP/1.1, keep-alive), and two real
/// clients in the target, attacked with `--port 8080 --every 500ms`:
/// - a Python client on one keep-alive connection (http.client) with its
///   own retry loop, as connection pools have, sees each reset as
///   `ConnectionAbortedError` (ECONNABORTED), reconnects, and has every
///   request answered on the retry;
/// - curl in the middle of a slow download exits 56 ("Recv failure:
///   Software caused connection abort");
/// - the server's handler threads see `ConnectionResetError`.
pub fn real_clients_see_the_reset(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let net = Pair::new("rst", &[])?;
    let python =
        if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    // `/` answers at once; `/slow` sends a large body a little at a time.
    let server = "\
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
    def do_GET(self):
        slow = self.path == '/slow'
        body = b'ok'
        self.send_response(200)
        self.send_header('Content-Length', str(10**8 if slow else len(body)))
        self.end_headers()
        if not slow:
            self.wfile.write(body)
            return
        print('SLOW', flush=True)
        while True:
            self.wfile.write(b'x' * 100)
            self.wfile.flush()
            time.sleep(0.01)
print('READY', flush=True)
http.server.ThreadingHTTPServer(('10.82.0.2', 8080), H).serve_forever()
";
    let mut srv = Killed(
        net.b().spawn(
            std::process::Command::new(python)
                .args(["-c", server])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped()),
        )?,
    );
    let srv_out = lines(srv.0.stdout.take().expect("piped"));
    expect_line(&srv_out, "READY", "python's http.server did not start")?;
    // Its tracebacks, read until it is killed.
    let mut srv_stderr = srv.0.stderr.take().expect("piped");
    let srv_err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut srv_stderr, &mut text);
        text
    });
    // Requests, 20 per second, on one keep-alive connection, from its first
    // answer (UP) until stdin closes; a failure closes the connection and
    // retries the request on a new one (3 attempts).
    let client = "\
import http.client, select, sys, time
new = lambda: http.client.HTTPConnection('10.82.0.2', 8080, timeout=10)
c, ok, retried, errors = new(), 0, 0, []
c.request('GET', '/'); c.getresponse().read(); ok += 1
print('UP', flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:
    for attempt in range(3):
        try:
            c.request('GET', '/'); c.getresponse().read()
        except OSError as e:
            errors.append(type(e).__name__ + ' ' + str(e.errno))
            c.close(); c = new()
            continue
        if attempt: retried += 1
        else: ok += 1
        break
    else:
        raise SystemExit('3 attempts failed: ' + ';'.join(errors))
    time.sleep(0.05)
print(ok, retried, ';'.join(errors))
";
    // Both clients are in the middle of their connections before the
    // attack (on a loaded emulated CPU, curl alone takes seconds to start):
    // curl's download has begun (the server said SLOW), python has had its
    // first answer (UP).
    let curl = net.target().spawn(
        std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "--max-time", "120", "http://10.82.0.2:8080/slow"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    )?;
    expect_line(&srv_out, "SLOW", "curl's download did not begin")?;
    let mut py = net.target().spawn(
        std::process::Command::new(python)
            .args(["-c", client])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    )?;
    let py_lines = lines(py.stdout.take().expect("piped"));
    expect_line(&py_lines, "UP", "python's client had no first answer")?;
    let (run, _) = attack(&net, &["--port", "8080", "--every", "500ms", "--duration", "2s"])?;
    let ended = run.wait(Duration::from_secs(30))?;
    let c = counters(&ended)?;
    let curl_out = curl.wait_with_output();
    drop(py.stdin.take());
    let py_said = py_lines.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    let py_out = py.wait_with_output()?;
    drop(srv);
    let srv_err = srv_err.join().map_err(|_| anyhow::anyhow!("stderr reader panicked"))?;
    let curl_out = curl_out?;
    let curl_said = String::from_utf8_lossy(&curl_out.stderr);
    // curl(1) EXIT CODES: 56, "Failure in receiving network data".
    anyhow::ensure!(
        curl_out.status.code() == Some(56) && curl_said.contains("abort"),
        "curl mid-download in the target: exit {:?}: {curl_said}",
        curl_out.status.code()
    );
    let mut words = py_said.split_whitespace();
    let ok: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let retried: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let errors: Vec<&str> = py_said.trim().splitn(3, ' ').nth(2).unwrap_or("").split(';').collect();
    let aborted = format!("ConnectionAbortedError {}", libc::ECONNABORTED);
    anyhow::ensure!(
        py_out.status.success() && retried >= 1 && errors.iter().all(|e| *e == aborted),
        "python's keep-alive client in the target: {py_said} {}",
        String::from_utf8_lossy(&py_out.stderr)
    );
    anyhow::ensure!(ok >= 5, "python's client: {py_said}");
    // Every connection chaos reset was the client's or curl's, and each
    // was seen.
    anyhow::ensure!(
        c["injected"] == errors.len() as u64 + 1,
        "chaos reset {} connections; python saw {} and curl 1: {c}",
        c["injected"],
        errors.len()
    );
    anyhow::ensure!(srv_err.contains("ConnectionResetError"), "python's http.server saw no reset: {srv_err}");
    eprint!("[python: {ok} answered at once, {retried} after {} resets; curl exit 56] ", errors.len());
    Ok(())
}

/// The lines `from` prints, as they come.
fn lines(from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(from)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Wait (at most 90 s: an emulated CPU under load) for the line `want`.
fn expect_line(lines: &std::sync::mpsc::Receiver<String>, want: &str, what: &str) -> anyhow::Result<()> {
    match lines.recv_timeout(Duration::from_secs(90)) {
        Ok(line) if line.trim() == want => Ok(()),
        other => anyhow::bail!("{what}: expected {want:?}, got {other:?}"),
    }
}

/// A child killed and reaped when dropped (the server above, also on an
/// early return).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
