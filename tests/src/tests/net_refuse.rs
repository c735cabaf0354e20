//! `chaos attack net-refuse`: what callers see (the errno of raw
//! `connect()` and `sendto()` calls, curl's and Python's own errors), the
//! rate, the filters (destination network, port, protocol, IPv4-mapped
//! IPv6), a sibling cgroup untouched, and how the safety suite
//! (`safety.rs`) measures the end of the fault — all measured by the
//! calling programs; chaos's counters are checked against them.

use std::{
    net::{Ipv6Addr, SocketAddr, TcpListener},
    process::Command,
    time::{Duration, Instant},
};

use chaos::capabilities::Capability;

use super::safety::{Ending, Family, Window};
use crate::{
    fixtures::{
        cgroup::Cgroup,
        netns::Netns,
        process::Place,
        runner::{self, ChaosRun},
    },
    harness::Ctx,
    helpers::{
        http,
        io::{self as calls, Calls, Waiting},
    },
    stats::check_rate_measured,
};

/// Every program of the family, both builds.
const PROGRAMS: &[&str] = &[
    "conn_connect4",
    "conn_connect6",
    "conn_sendmsg4",
    "conn_sendmsg6",
    "conn_eperm_cn4",
    "conn_eperm_cn6",
    "conn_eperm_sm4",
    "conn_eperm_sm6",
    "conn_incoming",
];

/// A target and a sibling cgroup, and an HTTP server (outside both, in the
/// root cgroup) listening on every address of this namespace, IPv4 and
/// IPv6, so that every connect the fault leaves alone succeeds.
pub struct World {
    pub target: Cgroup,
    pub sibling: Cgroup,
    pub port: u16,
    server: Option<http::Server>,
    /// Where it all runs, when not in chaos's own network namespace
    /// (dropped last).
    netns: Option<Netns>,
}

impl World {
    fn new() -> anyhow::Result<Self> {
        Self::new_in(None)
    }

    /// The same in `netns` (the benchmark's, where it may add firewall
    /// rules without touching the host's).
    pub fn new_in(netns: Option<Netns>) -> anyhow::Result<Self> {
        // A namespace of our own is empty: any port is free there.
        let port = match &netns {
            Some(_) => 8080,
            None => TcpListener::bind("[::]:0")?.local_addr()?.port(),
        };
        let place = Place { netns: netns.as_ref(), cgroup: None };
        let server = http::Server::start(place, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), false)?;
        Ok(Self {
            target: Cgroup::new("conn-target")?,
            sibling: Cgroup::new("conn-sibling")?,
            port,
            server: Some(server),
            netns,
        })
    }

    pub fn target(&self) -> Place<'_> {
        Place { netns: self.netns.as_ref(), cgroup: Some(&self.target) }
    }

    pub fn sibling(&self) -> Place<'_> {
        Place { netns: self.netns.as_ref(), cgroup: Some(&self.sibling) }
    }

    /// The world's namespace, in chaos's own cgroup (where its server is).
    pub fn outside(&self) -> Place<'_> {
        Place { netns: self.netns.as_ref(), cgroup: None }
    }

    /// Run a command in the world's network namespace (the benchmark's).
    pub fn exec(&self, cmd: &[&str]) -> anyhow::Result<String> {
        let ns =
            self.netns.as_ref().ok_or_else(|| anyhow::anyhow!("this world has no namespace of its own"))?;
        ns.exec(cmd)
    }

    pub fn v4(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start `chaos attack net-refuse` on the target; returns once the
    /// fault is in force.
    pub fn attack(&self, extra: &[&str]) -> anyhow::Result<ChaosRun> {
        let mut args = vec!["attack", "net-refuse", "--cgroup", &self.target.rel];
        args.extend_from_slice(extra);
        let mut run = ChaosRun::start(&args)?;
        run.wait_event("start", Duration::from_secs(60))?;
        Ok(run)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.finish();
        }
    }
}

/// `count` calls of `op` to `to` in `place`.
pub fn run_calls(
    place: Place<'_>,
    op: &str,
    to: &str,
    family: Option<&str>,
    count: u64,
) -> anyhow::Result<Calls> {
    let count = count.to_string();
    let mut args = vec!["--op", op, "--to", to, "--count", &count];
    if let Some(f) = family {
        args.extend(["--family", f]);
    }
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    calls::run_command(place, &mut crate::helpers::command("conn-calls", &args))
}

/// The errno this kernel can give: ECONNREFUSED where sock_addr programs
/// may call bpf_set_retval (6.1), else EPERM.
fn errno_here(ctx: &mut Ctx) -> (&'static str, i32) {
    if ctx.require(Capability::SockAddrRetval).is_ok() {
        ("ECONNREFUSED", libc::ECONNREFUSED)
    } else {
        ("EPERM", libc::EPERM)
    }
}

fn require(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require(Capability::CgroupSockAddr)
}

/// The share of the target's connects given by --percent fail with the
/// errno, at once; a sibling's never do; chaos's counters agree with what
/// the callers saw. Where the kernel can only say EPERM (before 6.1), the
/// default errno is refused with that reason first, and nothing loads.
pub fn connects_fail_with_the_errno_at_the_rate(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let w = World::new()?;
    let (name, errno) = errno_here(ctx);
    if errno == libc::EPERM {
        let out = runner::run(&["attack", "net-refuse", "--cgroup", &w.target.rel, "--duration", "10s"])?;
        out.refused("ECONNREFUSED before Linux 6.1", "EPERM only")?;
        anyhow::ensure!(NetRefuse::loaded().is_empty(), "loaded {:?}", NetRefuse::loaded());
    }
    let port = w.port.to_string();
    let run = w.attack(&["--errno", name, "--percent", "50", "--port", &port, "--duration", "120s"])?;
    let mut failed = 0;
    let target = check_rate_measured("connects refused", 0.5, || {
        let c = run_calls(w.target(), "connect", &w.v4(), None, 400)?;
        anyhow::ensure!(c.with(errno) == c.failed(), "other errnos than {name}: {:?}", c.errnos);
        failed += c.failed();
        Ok((c.failed(), c.calls))
    });
    let sibling = run_calls(w.sibling(), "connect", &w.v4(), None, 200);
    run.signal(libc::SIGINT);
    let ended = run.wait(Duration::from_secs(30))?;
    target?;
    let sibling = sibling?;
    anyhow::ensure!(sibling.failed() == 0, "the sibling's connects failed: {:?}", sibling.errnos);
    let abort = ended.aborted_by("SIGINT")?;
    anyhow::ensure!(
        abort["counters"]["connect_refused"].as_u64() == Some(failed),
        "counters {} vs {failed} refusals seen",
        abort["counters"]
    );
    Ok(())
}

/// Real clients: curl and a Python client with its own retry loop fail at
/// once with their own "connection refused", every attempt; the sibling's
/// curl gets its answer.
pub fn real_clients_see_connection_refused(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    ctx.require(Capability::SockAddrRetval)?;
    let w = World::new()?;
    let url = format!("http://{}/health", w.v4());
    let curl = |place: Place<'_>| -> anyhow::Result<(Option<i32>, String, Duration)> {
        let t0 = Instant::now();
        let out = place
            .spawn(
                Command::new("curl")
                    .args(["-sS", "--max-time", "10", &url])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped()),
            )?
            .wait_with_output()?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.status.code(), text, t0.elapsed()))
    };
    let python =
        if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    // A client with its own retry loop (5 attempts, 50 ms apart), as
    // connection pools have: every attempt must see the refusal.
    let script = format!(
        "import socket, time\nseen = []\nfor _ in range(5):\n    try:\n        socket.create_connection(('127.0.0.1', \
         {}), timeout=10).close()\n        seen.append('connected')\n    except OSError as e:\n        \
         seen.append(type(e).__name__ + ' ' + str(e.errno))\n    time.sleep(0.05)\nprint(';'.join(seen))",
        w.port
    );
    let run = w.attack(&["--port", &w.port.to_string(), "--duration", "120s"])?;
    let refused = curl(w.target());
    let spared = curl(w.sibling());
    let py = w.target().output(Command::new(python).args(["-c", &script]));
    run.signal(libc::SIGINT);
    run.wait(Duration::from_secs(30))?;
    let (code, text, took) = refused?;
    // curl's exit code 7: "Failed to connect to host" (curl(1), EXIT CODES).
    anyhow::ensure!(code == Some(7), "curl in the target: exit {code:?}: {text}");
    anyhow::ensure!(text.contains("Couldn't connect") || text.contains("refused"), "curl said: {text}");
    anyhow::ensure!(took < Duration::from_secs(5), "curl took {took:?} to fail: not at once");
    let (code, text, _) = spared?;
    anyhow::ensure!(code == Some(0) && text.trim() == "ok", "curl in the sibling: exit {code:?}: {text}");
    let py = py?;
    let refused = format!("ConnectionRefusedError {}", libc::ECONNREFUSED);
    anyhow::ensure!(py.trim() == vec![refused; 5].join(";"), "python in the target, 5 attempts: {py}");
    Ok(())
}

/// Destination network, port, protocol and address family: only matching
/// calls fail; an IPv4 network covers dual-stack sockets connecting to the
/// IPv4-mapped address; UDP sends with a destination fail as connects do.
pub fn filters_pick_destination_port_protocol_and_family(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let (name, errno) = errno_here(ctx);
    let w = World::new()?;
    // A second listener, on another port.
    let other = TcpListener::bind("127.0.0.1:0")?;
    let other = format!("127.0.0.1:{}", other.local_addr()?.port());
    let v6 = format!("[::1]:{}", w.port);
    let port = w.port.to_string();
    // (op, to, family, refused?)
    let check = |cases: &[(&str, &str, Option<&str>, bool)]| -> anyhow::Result<()> {
        for (op, to, family, refused) in cases {
            let c = run_calls(w.target(), op, to, *family, 20)?;
            let want = if *refused { 20 } else { 0 };
            anyhow::ensure!(
                c.with(errno) == want && c.failed() == want,
                "{op} to {to} (family {family:?}): {} of 20 failed ({:?}), expected {want}",
                c.failed(),
                c.errnos
            );
        }
        Ok(())
    };
    let run = w.attack(&[
        "--errno",
        name,
        "--cidr",
        "127.0.0.0/8",
        "--port",
        &port,
        "--protocol",
        "tcp",
        "--duration",
        "120s",
    ])?;
    let tcp = check(&[
        ("connect", &w.v4(), None, true),
        ("connect", &w.v4(), Some("6"), true),
        ("connect", &v6, None, false),
        ("connect", &other, None, false),
        ("sendto", &w.v4(), None, false),
        ("udp-connect", &w.v4(), None, false),
    ]);
    run.signal(libc::SIGINT);
    run.wait(Duration::from_secs(30))?;
    tcp.map_err(|e| anyhow::anyhow!("--cidr 127.0.0.0/8 --protocol tcp: {e}"))?;
    let run = w.attack(&["--errno", name, "--cidr", "::1", "--protocol", "udp", "--duration", "120s"])?;
    let udp = check(&[
        ("sendto", &v6, None, true),
        ("udp-connect", &v6, None, true),
        ("sendto", &w.v4(), None, false),
        ("connect", &v6, None, false),
    ]);
    run.signal(libc::SIGINT);
    run.wait(Duration::from_secs(30))?;
    udp.map_err(|e| anyhow::anyhow!("--cidr ::1 --protocol udp: {e}"))
}

/// Bad flags: exit code 3, a message naming the flag, nothing loaded.
pub fn bad_flags_are_refused(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let target = Cgroup::new("conn-flags")?;
    let cases: &[(&[&str], &str)] = &[
        (&["--errno", "EFOO"], "unknown errno"),
        (&["--errno", "0"], "not an errno"),
        (&["--percent", "0"], "--percent 0"),
        (&["--percent", "101"], "outside 0..100"),
        (&["--port", "0"], "not a port"),
        (&["--protocol", "icmp"], "icmp"),
        (&["--cidr", "10.0.0.0/33"], "prefix length"),
        (&["--direction", "sideways"], "invalid value 'sideways'"),
        (&["--direction", "incoming", "--errno", "EPERM"], "--errno EPERM with --direction incoming"),
        (&["--direction", "incoming", "--protocol", "udp"], "net-loss --direction ingress"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["attack", "net-refuse", "--cgroup", &target.rel, "--duration", "10s"];
        args.extend_from_slice(flags);
        runner::run(&args)?.refused(&format!("{flags:?}"), says)?;
        anyhow::ensure!(NetRefuse::loaded().is_empty(), "{flags:?}: loaded {:?}", NetRefuse::loaded());
    }
    Ok(())
}

/// The safety suite's view of net-refuse: a stream of connects from the
/// target, one per millisecond, each timed.
pub struct NetRefuse {
    w: World,
    errno: &'static str,
}

impl Family for NetRefuse {
    /// Four small programs load in well under a second even under
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
        // EPERM: the errno every kernel can give (the others are
        // connects_fail_with_the_errno_at_the_rate's); the endings do not
        // depend on it.
        Ok(Self { w: World::new()?, errno: "EPERM" })
    }

    fn prepare(&self, seconds: f64) -> anyhow::Result<Waiting> {
        let secs = seconds.to_string();
        let to = self.w.v4();
        let args = [
            "--op",
            "connect",
            "--to",
            &to,
            "--seconds",
            &secs,
            "--interval-us",
            "1000",
            "--timeline",
            "--wait",
        ];
        Waiting::start(self.w.target(), "conn-calls", &args)
    }

    fn attack(&self, duration: &str) -> anyhow::Result<ChaosRun> {
        self.w.attack(&["--errno", self.errno, "--port", &self.w.port.to_string(), "--duration", duration])
    }

    fn measure(&self, prepared: Waiting, _seconds: f64) -> anyhow::Result<Self::Measuring> {
        Ok(std::thread::spawn(move || prepared.calls()))
    }

    fn finish(&self, measuring: Self::Measuring) -> anyhow::Result<Calls> {
        measuring.join().map_err(|_| anyhow::anyhow!("connect stream thread panicked"))?
    }

    fn ensure_ended(&self, c: &Calls, window: Window, what: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            c.failures.iter().all(|f| f[1] == libc::EPERM as u64),
            "{what}: other errnos than EPERM: {:?}",
            c.errnos
        );
        c.ensure_ended("connects", 50, window.to_ns + window.grace_ns, window.to_ns, what)
    }

    fn loaded() -> Vec<String> {
        super::safety::programs_loaded(PROGRAMS)
    }

    /// Once chaos has exited, the kernel frees the programs when their last
    /// reference goes (the links' and the fds', asynchronously after an
    /// RCU grace period): within 2 s.
    fn unloaded_within(ending: Ending) -> Option<Duration> {
        match ending {
            Ending::Deadline | Ending::Kill9 => Some(Duration::from_secs(2)),
            Ending::Signal | Ending::Hung => None,
        }
    }

    fn check_counters(c: &Calls, abort: &serde_json::Value) -> anyhow::Result<()> {
        anyhow::ensure!(
            abort["counters"]["connect_refused"].as_u64() == Some(c.failures.len() as u64),
            "counters {} vs {} refusals seen",
            abort["counters"],
            c.failures.len()
        );
        Ok(())
    }
}
