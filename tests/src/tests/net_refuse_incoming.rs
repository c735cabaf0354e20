//! `chaos attack net-refuse --direction incoming`: new TCP connections to
//! the target's listeners are answered with a reset — the client's
//! blocking connect fails with ECONNREFUSED, curl and Python say
//! "connection refused" — while another cgroup's listener on the same port
//! (bound to an exact address beside the target's wildcard one), the
//! target's other ports when `--port` is given, clients outside `--cidr`,
//! and connections established before the attack go on; at the configured
//! share; and, through the safety suite (`safety.rs`), never after any
//! ending. All measured by the clients and servers themselves.
//!
//! ```text
//!   netns a 10.82.0.1, 10.82.0.3 (target, sibling: servers) ── veth ── netns b 10.82.0.2 (clients)
//! ```

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use chaos::capabilities::Capability;
use serde_json::Value;

use super::safety::{Ending, Family, Window};
use crate::{
    fixtures::{
        cgroup::Cgroup,
        netns::Netns,
        pair::Pair,
        process::Place,
        runner::{self, ChaosRun},
    },
    harness::Ctx,
    helpers::{
        echo::Echo,
        hold::Hold,
        http,
        io::{self as calls, Calls, Waiting},
    },
    stats,
};

/// The program of incoming refusals.
const PROGRAM: &str = "conn_incoming";

fn attack(target: &Cgroup, flags: &[&str]) -> anyhow::Result<ChaosRun> {
    let mut args = vec!["attack", "net-refuse", "--cgroup", &target.rel, "--direction", "incoming"];
    args.extend_from_slice(flags);
    let mut run = ChaosRun::start(&args)?;
    run.wait_event("start", Duration::from_secs(60))?;
    Ok(run)
}

fn a(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 82, 0, last], port))
}

/// The IPv4 wildcard address.
fn any(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

/// `count` blocking connects from `place` to `to`: what each returned.
fn handshakes(place: Place<'_>, to: SocketAddr, count: u64) -> anyhow::Result<Calls> {
    let args: Vec<String> = ["--op", "tcp-handshake", "--to", &to.to_string(), "--count", &count.to_string()]
        .map(String::from)
        .into();
    calls::run_command(place, &mut crate::helpers::command("conn-calls", &args))
}

fn require(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require(Capability::SkLookup)
}

/// The stop event's counters, or why there are none.
fn counters(ended: &runner::Ended) -> anyhow::Result<Value> {
    let stop = ended.event("stop").ok_or_else(|| {
        anyhow::anyhow!("no stop event (exit {:?}); chaos said:\n{}", ended.status, ended.stderr)
    })?;
    Ok(stop["counters"].clone())
}

fn loaded() -> Vec<String> {
    super::safety::programs_loaded(&[PROGRAM])
}

/// The target listens on the wildcard address of port 7101, the sibling
/// on the exact address 10.82.0.1 of the same port (both SO_REUSEPORT,
/// which lets them share it) and on the wildcard of port 7102. During the
/// attack: every connect to the target (10.82.0.3:7101) is refused with a
/// reset, at once; every one to the sibling's exact listener and to its
/// other port succeeds; the target's three connections established before
/// the attack still carry data. After the deadline the target accepts
/// again. chaos's counters equal the refusals the client saw.
pub fn refuses_connections_to_the_targets_listeners(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let net = Pair::new("inc", &["10.82.0.3/24"])?;
    let target = Echo::start_reuseport(net.target(), any(7101))?;
    let shadow = Echo::start_reuseport(net.sibling(), a(1, 7101))?;
    let other_port = Echo::start(net.sibling(), any(7102))?;
    let established = Hold::start(net.b(), a(3, 7101), 3)?;
    let run = attack(&net.target, &["--duration", "8s"])?;
    let t0 = Instant::now();
    let refused = handshakes(net.b(), a(3, 7101), 20);
    let to_shadow = handshakes(net.b(), a(1, 7101), 20);
    let to_other = handshakes(net.b(), a(1, 7102), 20);
    let during = t0.elapsed();
    let ended = run.wait(Duration::from_secs(30))?;
    let after = handshakes(net.b(), a(3, 7101), 5);
    let established = established.finish()?;
    let ((accepted, _), (shadow_accepted, _), (other_accepted, _)) =
        (target.finish()?, shadow.finish()?, other_port.finish()?);
    let (refused, to_shadow, to_other, after) = (refused?, to_shadow?, to_other?, after?);
    let c = counters(&ended)?;
    anyhow::ensure!(
        during < Duration::from_secs(8),
        "the connects took {during:?}, longer than the attack: the refusals were not at once (a SYN \
         left unanswered costs its client a second)"
    );
    anyhow::ensure!(
        refused.with(libc::ECONNREFUSED) == 20,
        "connects to the target's wildcard listener: {:?}, expected 20 ECONNREFUSED",
        refused.errnos
    );
    anyhow::ensure!(
        to_shadow.failed() == 0 && shadow_accepted == 20,
        "the sibling's listener on the same port, exact address: {:?}, {shadow_accepted} accepted",
        to_shadow.errnos
    );
    anyhow::ensure!(
        to_other.failed() == 0 && other_accepted == 20,
        "the sibling's listener on another port: {:?}, {other_accepted} accepted",
        to_other.errnos
    );
    anyhow::ensure!(
        established.alive == 3,
        "connections established before the attack were touched: {established:?}"
    );
    anyhow::ensure!(after.failed() == 0, "connects after the deadline: {:?}", after.errnos);
    anyhow::ensure!(
        accepted == 3 + 5,
        "the target accepted {accepted} connections: 3 before the attack and 5 after it expected"
    );
    anyhow::ensure!(
        c["incoming_refused"] == 20 && c["injected"] == 20 && c["incoming_matched"] == 20,
        "chaos's counters: {c}"
    );
    anyhow::ensure!(loaded().is_empty(), "{PROGRAM} still loaded after chaos exited");
    eprint!("[20 refused in {during:?} with the sibling's 40 accepted, 3 established alive, 5 after] ");
    Ok(())
}

/// `--percent 30 --port 7101 --cidr 10.82.0.2`: 200 connects from b are
/// refused at a binomial share (its central 1 - 1e-6 interval), equal to
/// chaos's count of refusals; connects from the target's own namespace (127.0.0.1,
/// outside the network) and to the target's other port all succeed.
/// chaos counts one decision per connect, and one per stray segment of an
/// accepted connection (see below).
pub fn refuses_the_configured_share_from_chosen_clients(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let net = Pair::new("inc", &["10.82.0.3/24"])?;
    let server = Echo::start(net.target(), any(7101))?;
    let other = Echo::start(net.target(), any(7102))?;
    // A first connection resolves the neighbours both ways: a SYN-ACK or
    // reset held up by it would have the client send its SYN again, which
    // is looked up (and counted) again.
    let warm = handshakes(net.b(), a(1, 7101), 1)?;
    anyhow::ensure!(warm.failed() == 0, "a connect before the attack failed: {:?}", warm.errnos);
    let run = attack(
        &net.target,
        &["--percent", "30", "--port", "7101", "--cidr", "10.82.0.2", "--duration", "120s"],
    )?;
    let n = 200;
    let shared = handshakes(net.b(), a(1, 7101), n);
    let local = handshakes(net.sibling(), SocketAddr::from(([127, 0, 0, 1], 7101)), 20);
    let other_port = handshakes(net.b(), a(1, 7102), 20);
    run.signal(libc::SIGINT);
    let ended = run.wait(Duration::from_secs(30))?;
    let ((accepted, _), _) = (server.finish()?, other.finish()?);
    let (shared, local, other_port) = (shared?, local?, other_port?);
    let abort = ended.aborted_by("SIGINT")?;
    let refused = shared.with(libc::ECONNREFUSED);
    let (lo, hi) = stats::interval(n, 0.30, 1e-6);
    anyhow::ensure!((lo..=hi).contains(&refused), "{refused} of {n} refused at 30%: outside {lo}..={hi}");
    anyhow::ensure!(shared.failed() == refused, "other errnos than ECONNREFUSED: {:?}", shared.errnos);
    anyhow::ensure!(local.failed() == 0, "connects from outside --cidr failed: {:?}", local.errnos);
    anyhow::ensure!(other_port.failed() == 0, "connects to another port failed: {:?}", other_port.errnos);
    anyhow::ensure!(accepted == 1 + n - refused + 20, "the server accepted {accepted}");
    let c = &abort["counters"];
    // The program decides per listener lookup: one per SYN, and one per
    // stray segment of a connection already closed on the server (a
    // client's late duplicate ACK, seen in captures here), which a
    // listener answers with a reset as well. Strays come from accepted
    // connections, and a refused one is no refused connect.
    let (matched, by_chaos) = (c["incoming_matched"].as_u64(), c["incoming_refused"].as_u64());
    let (Some(matched), Some(by_chaos)) = (matched, by_chaos) else { anyhow::bail!("chaos's counters: {c}") };
    let strays = matched.saturating_sub(n);
    anyhow::ensure!(
        matched >= n && strays <= n - refused && (refused..=refused + strays).contains(&by_chaos),
        "chaos's counters: {c}, for {refused} refusals the clients saw in {n} connects"
    );
    eprint!("[{refused} of {n} refused at 30% (bounds {lo}..={hi}); {strays} stray segments looked up] ");
    Ok(())
}

/// Real clients against the target's HTTP server: curl fails at once with
/// exit 7 ("Couldn't connect"), a Python client with its own retry loop
/// sees `ConnectionRefusedError` on every attempt; a sibling's server on
/// another port answers both.
pub fn real_clients_see_connection_refused(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let net = Pair::new("inc", &["10.82.0.3/24"])?;
    let server = http::Server::start(net.target(), any(8080), false)?;
    let spared = http::Server::start(net.sibling(), any(8081), false)?;
    let curl = |port: u16| -> anyhow::Result<(Option<i32>, String, Duration)> {
        let t0 = Instant::now();
        let url = format!("http://10.82.0.1:{port}/health");
        let out = net
            .b()
            .spawn(
                Command::new("curl")
                    .args(["-sS", "--max-time", "10", &url])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped()),
            )?
            .wait_with_output()?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.status.code(), text, t0.elapsed()))
    };
    let python =
        if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    // 5 attempts, 50 ms apart, as connection pools retry.
    let script = "import http.client, time\nseen = []\nfor _ in range(5):\n    c = \
                  http.client.HTTPConnection('10.82.0.1', 8080, timeout=10)\n    try:\n        \
                  c.request('GET', '/health')\n        seen.append(str(c.getresponse().status))\n    except \
                  OSError as e:\n        seen.append(type(e).__name__ + ' ' + str(e.errno))\n    c.close()\n    \
                  time.sleep(0.05)\nprint(';'.join(seen))";
    let run = attack(&net.target, &["--port", "8080", "--duration", "120s"])?;
    let refused = curl(8080);
    let answered = curl(8081);
    let py = net.b().output(Command::new(python).args(["-c", script]));
    run.signal(libc::SIGINT);
    run.wait(Duration::from_secs(30))?;
    let after = curl(8080);
    server.finish()?;
    spared.finish()?;
    let (code, text, took) = refused?;
    // curl's exit code 7: "Failed to connect to host" (curl(1), EXIT CODES).
    anyhow::ensure!(code == Some(7), "curl to the target: exit {code:?}: {text}");
    anyhow::ensure!(text.contains("Couldn't connect") || text.contains("refused"), "curl said: {text}");
    anyhow::ensure!(took < Duration::from_secs(5), "curl took {took:?} to fail: not at once");
    let (code, text, _) = answered?;
    anyhow::ensure!(code == Some(0) && text.trim() == "ok", "curl to the sibling: exit {code:?}: {text}");
    let py = py?;
    let refused = format!("ConnectionRefusedError {}", libc::ECONNREFUSED);
    anyhow::ensure!(py.trim() == vec![refused; 5].join(";"), "python, 5 attempts: {py}");
    let (code, text, _) = after?;
    anyhow::ensure!(code == Some(0) && text.trim() == "ok", "curl after the attack: exit {code:?}: {text}");
    Ok(())
}

/// Refused when the attack starts, before anything is attached: exit 3,
/// the message, no fault started (the one-step experiment's events say
/// so), nothing loaded.
fn refused_at_start(out: &runner::Ended, what: &str, says: &str) -> anyhow::Result<()> {
    anyhow::ensure!(out.code() == Some(3), "{what}: exit code {:?}, expected 3: {}", out.code(), out.stderr);
    anyhow::ensure!(out.stderr.contains(says), "{what}: the message does not say {says:?}: {}", out.stderr);
    anyhow::ensure!(out.event("start").is_none(), "{what}: a fault started: {:?}", out.events);
    anyhow::ensure!(loaded().is_empty(), "{what}: {PROGRAM} loaded after the refusal");
    Ok(())
}

/// Refused before anything is attached: a target without a process, one
/// without a listener on `--port` (exit 3, saying what to do), a listener
/// sharing its address and port with another cgroup's (SO_REUSEPORT).
pub fn refused_without_an_exact_listener(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let net = Pair::new("inc", &["10.82.0.3/24"])?;
    let flags = ["attack", "net-refuse", "--cgroup", &net.target.rel, "--duration", "10s", "--direction"];
    let out = runner::run(&[&flags[..], &["incoming"]].concat())?;
    refused_at_start(&out, "a target without a process", "has no process")?;
    let idle = Echo::start(net.target(), any(7101))?;
    let out = runner::run(&[&flags[..], &["incoming", "--port", "7102"]].concat())?;
    let no_port = refused_at_start(&out, "no listener on --port", "no TCP listening socket on port 7102");
    idle.finish()?;
    no_port?;
    let mine = Echo::start_reuseport(net.target(), any(7103))?;
    let theirs = Echo::start_reuseport(net.sibling(), any(7103))?;
    let out = runner::run(&[&flags[..], &["both"]].concat())?;
    let shared = refused_at_start(&out, "a port shared with the sibling", "SO_REUSEPORT");
    mine.finish()?;
    theirs.finish()?;
    shared
}

/// The safety suite's view of incoming refusals: the target's server on
/// loopback in a namespace of its own, and a stream of blocking connects
/// to it from a sibling, one per millisecond, each timed.
pub struct NetRefuseIncoming {
    // Drop order: the server (a process in the target) before the cgroups.
    server: Option<Echo>,
    target: Cgroup,
    sibling: Cgroup,
    ns: Netns,
}

const LOOPBACK: ([u8; 4], u16) = ([127, 0, 0, 1], 7101);

impl Drop for NetRefuseIncoming {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.finish();
        }
    }
}

impl Family for NetRefuseIncoming {
    /// One small program loads in well under a second even under
    /// emulation.
    const DEADLINE: &'static str = "5s";
    const DEADLINE_MEASURE_S: f64 = 6.5;
    const EXIT_WITHIN: Duration = Duration::from_secs(20);
    type Prepared = Waiting;
    type Measuring = std::thread::JoinHandle<anyhow::Result<Calls>>;
    type Measured = Calls;

    fn require(ctx: &mut Ctx) -> anyhow::Result<()> {
        require(ctx)
    }

    fn new() -> anyhow::Result<Self> {
        let ns = Netns::new("inc-safety")?;
        let (target, sibling) = (Cgroup::new("inc-target")?, Cgroup::new("inc-sibling")?);
        let place = Place { netns: Some(&ns), cgroup: Some(&target) };
        let server = Some(Echo::start(place, SocketAddr::from(LOOPBACK))?);
        Ok(Self { server, target, sibling, ns })
    }

    fn prepare(&self, seconds: f64) -> anyhow::Result<Waiting> {
        let (secs, to) = (seconds.to_string(), SocketAddr::from(LOOPBACK).to_string());
        let args = [
            "--op",
            "tcp-handshake",
            "--to",
            &to,
            "--seconds",
            &secs,
            "--interval-us",
            "1000",
            "--timeline",
            "--wait",
        ];
        Waiting::start(Place { netns: Some(&self.ns), cgroup: Some(&self.sibling) }, "conn-calls", &args)
    }

    fn attack(&self, duration: &str) -> anyhow::Result<ChaosRun> {
        attack(&self.target, &["--duration", duration])
    }

    fn measure(&self, prepared: Waiting, _seconds: f64) -> anyhow::Result<Self::Measuring> {
        Ok(std::thread::spawn(move || prepared.calls()))
    }

    fn finish(&self, measuring: Self::Measuring) -> anyhow::Result<Calls> {
        measuring.join().map_err(|_| anyhow::anyhow!("connect stream thread panicked"))?
    }

    fn ensure_ended(&self, c: &Calls, window: Window, what: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            c.failures.iter().all(|f| f[1] == libc::ECONNREFUSED as u64),
            "{what}: other errnos than ECONNREFUSED: {:?}",
            c.errnos
        );
        c.ensure_ended("connects", 50, window.to_ns + window.grace_ns, window.to_ns, what)
    }

    fn loaded() -> Vec<String> {
        loaded()
    }

    /// Once chaos has exited, the kernel frees the program when its last
    /// reference goes (the link's and the fd's, after an RCU grace
    /// period): within 2 s.
    fn unloaded_within(ending: Ending) -> Option<Duration> {
        match ending {
            Ending::Deadline | Ending::Kill9 => Some(Duration::from_secs(2)),
            Ending::Signal | Ending::Hung => None,
        }
    }

    fn check_counters(c: &Calls, abort: &Value) -> anyhow::Result<()> {
        anyhow::ensure!(
            abort["counters"]["incoming_refused"].as_u64() == Some(c.failures.len() as u64),
            "counters {} vs {} refusals seen",
            abort["counters"],
            c.failures.len()
        );
        Ok(())
    }
}
