//! `chaos attack dns-error`: what resolvers in the target see — dig's
//! status line, glibc's `getent hosts` and Python's `getaddrinfo` (through
//! their own /etc/resolv.conf), raw queries counted one by one — for the
//! names the patterns match and for the others, against a real resolver
//! (dnsmasq) beyond a veth and a node-local cache (dnsmasq on loopback,
//! as systemd-resolved or NodeLocal DNSCache sit); the rate; a sibling
//! cgroup untouched; and how the safety suite (`safety.rs`) measures the
//! end of the fault.
//!
//! ```text
//!   netns ctr (target, sibling; cache 127.0.0.53) ── veth ── netns peer
//!     10.77.0.1 fd77::1                                      10.77.0.2 fd77::2 (dnsmasq)
//! ```

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    net_loss::EGRESS,
    safety::{Ending, Family, Window},
};
use crate::{
    fixtures::{
        cgroup::Cgroup,
        lab::Lab,
        process::Place,
        runner::{self, ChaosRun},
        scratch::{Killed, PrivDir, with_resolv_conf},
    },
    harness::Ctx,
    helpers::io::{self as calls, Calls, Waiting},
    stats::check_rate_measured,
};
use chaos::capabilities::Capability;

/// Every program of the family.
const PROGRAMS: &[&str] = &["dns_egress", "dns_sockops", "dns_msg"];

/// The resolver beyond the veth, and the node-local cache.
pub const UPSTREAM: &str = "10.77.0.2";
const UPSTREAM6: &str = "fd77::2";
const CACHE: &str = "127.0.0.53";

/// What the resolvers answer: every name under example.test and
/// other.test, the zones themselves included, has an address.
const ZONES: &[(&str, &str)] = &[("example.test", "10.1.2.3"), ("other.test", "10.1.2.4")];

/// How long glibc waits for an answer in these tests.
const RESOLV_TIMEOUT: Duration = Duration::from_secs(4);

/// DNS RCODEs (RFC 1035 4.1.1, RFC 2136 for REFUSED's number), as
/// `dns-calls` reports them.
const SERVFAIL: i32 = 2;
const NXDOMAIN: i32 = 3;

/// The lab, a resolver in the peer namespace and a cache in the
/// container's, and resolv.conf files naming each. Field order is drop
/// order: the resolvers go before their namespaces.
pub struct World {
    _upstream: Killed,
    _cache: Killed,
    dir: PrivDir,
    lab: Lab,
}

impl World {
    pub fn new() -> anyhow::Result<Self> {
        let lab = Lab::new()?;
        lab.ctr.ip(&["addr", "add", "fd77::1/64", "dev", &lab.ctr_dev, "nodad"])?;
        let peer_dev = format!("{}p", lab.ctr_dev.trim_end_matches('c'));
        lab.peer.ip(&["addr", "add", "fd77::2/64", "dev", &peer_dev, "nodad"])?;
        let dir = PrivDir::new("dns")?;
        // glibc tries one server once, for RESOLV_TIMEOUT (resolv.conf(5)):
        // a lookup that took half of it was not answered by chaos at once.
        for (file, server) in [("upstream.conf", UPSTREAM), ("cache.conf", CACHE)] {
            let options = format!("options timeout:{} attempts:1", RESOLV_TIMEOUT.as_secs());
            dir.write(file, &format!("nameserver {server}\n{options}\n"))?;
        }
        let mut zones: Vec<String> = ZONES.iter().map(|(z, a)| format!("--address=/{z}/{a}")).collect();
        let upstream = dnsmasq(lab.peer(), &format!("--listen-address={UPSTREAM},{UPSTREAM6}"), &zones)?;
        zones = vec![format!("--server={UPSTREAM}")];
        let cache = dnsmasq(
            Place { netns: Some(&lab.ctr), cgroup: None },
            &format!("--listen-address={CACHE}"),
            &zones,
        )?;
        let w = Self { _upstream: upstream, _cache: cache, dir, lab };
        // Both answer before any test relies on them (dnsmasq binds its
        // sockets after reading its options: a few milliseconds).
        for server in [UPSTREAM, CACHE] {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let got = dig(w.outside(), server, "example.test");
                if matches!(&got, Ok((status, _)) if status == "NOERROR") {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "dnsmasq at {server} does not answer: {got:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(w)
    }

    pub fn target(&self) -> Place<'_> {
        self.lab.target()
    }

    pub fn sibling(&self) -> Place<'_> {
        self.lab.sibling()
    }

    /// The container's namespace, in no test cgroup.
    pub fn outside(&self) -> Place<'_> {
        Place { netns: Some(&self.lab.ctr), cgroup: None }
    }

    fn resolv(&self, server: &str) -> PathBuf {
        self.dir.path(if server == CACHE { "cache.conf" } else { "upstream.conf" })
    }

    /// Start `chaos attack dns-error` on the target; returns once the
    /// fault is in force.
    pub fn attack(&self, extra: &[&str]) -> anyhow::Result<ChaosRun> {
        let mut args = vec!["attack", "dns-error", "--cgroup", &self.lab.target.rel];
        args.extend_from_slice(extra);
        let mut run = ChaosRun::start(&args)?;
        run.wait_event("start", Duration::from_secs(60))?;
        Ok(run)
    }
}

/// dnsmasq in the foreground, with no configuration but `listen` and
/// `extra`, answering from nothing but its options.
fn dnsmasq(place: Place<'_>, listen: &str, extra: &[String]) -> anyhow::Result<Killed> {
    let mut cmd = Command::new("dnsmasq");
    cmd.args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--pid-file="])
        .args(["--bind-interfaces", listen])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(Killed(place.spawn(&mut cmd)?))
}

/// `dig` once, one try of two seconds (over UDP; [`dig_tcp`]): its status (`NOERROR`, `NXDOMAIN`,
/// ..., or `timeout`) and the answer's address, if any.
fn dig(place: Place<'_>, server: &str, name: &str) -> anyhow::Result<(String, Option<String>)> {
    dig_with(place, server, name, &[])
}

fn dig_with(
    place: Place<'_>,
    server: &str,
    name: &str,
    extra: &[&str],
) -> anyhow::Result<(String, Option<String>)> {
    let at = format!("@{server}");
    let out = place
        .spawn(
            Command::new("dig")
                .args(["+tries=1", "+time=2", "+noall", "+comments", "+answer"])
                .args(extra)
                .args([&at, name, "A"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )?
        .wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // ";; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 9900"
    let status = text.split("status: ").nth(1).and_then(|s| s.split(',').next());
    let address = text.lines().find(|l| !l.starts_with(';') && l.contains("\tA\t"));
    match status {
        Some(s) => Ok((s.to_owned(), address.and_then(|a| a.split_whitespace().last()).map(str::to_owned))),
        None if out.status.code() == Some(9) => Ok(("timeout".into(), None)),
        None => anyhow::bail!("dig {at} {name}: exit {}: {text}", out.status),
    }
}

/// `getent hosts name` with `resolv` as its resolv.conf: exit code, what
/// it printed, how long it took.
fn getent(place: Place<'_>, resolv: &std::path::Path, name: &str) -> anyhow::Result<(i32, String, Duration)> {
    getent_with(place, resolv, name, &[])
}

fn getent_with(
    place: Place<'_>,
    resolv: &std::path::Path,
    name: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(i32, String, Duration)> {
    let mut cmd = Command::new("getent");
    cmd.args(["hosts", name]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.envs(env.iter().copied());
    with_resolv_conf(&mut cmd, resolv)?;
    let t0 = Instant::now();
    let out = place.spawn(&mut cmd)?.wait_with_output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        t0.elapsed(),
    ))
}

/// A Python client with its own retry loop (5 attempts, 50 ms apart, as
/// connection pools have): `getaddrinfo`'s outcome at each attempt, "ok"
/// or the `gaierror` number (-2 EAI_NONAME, -3 EAI_AGAIN).
fn python(place: Place<'_>, resolv: &std::path::Path, name: &str) -> anyhow::Result<String> {
    let python =
        if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let script = "import socket, sys, time\nseen = []\nfor _ in range(5):\n    try:\n        \
                  socket.getaddrinfo(sys.argv[1], 80, socket.AF_INET, socket.SOCK_STREAM)\n        \
                  seen.append('ok')\n    except socket.gaierror as e:\n        seen.append(str(e.errno))\n    \
                  time.sleep(0.05)\nprint(';'.join(seen))";
    let mut cmd = Command::new(python);
    cmd.args(["-c", script, name]);
    with_resolv_conf(&mut cmd, resolv)?;
    Ok(place.output(&mut cmd)?.trim().to_owned())
}

/// How `dns-calls` sends: over UDP, over TCP with length and message in
/// one send, or in two.
const UDP: &str = "--udp";
const TCP: &str = "--tcp";
const TCP_SPLIT: &str = "--tcp-split";

/// `count` raw queries for `name` to `server` from `place`, sent `how`,
/// each over a new socket (a new connection for TCP) and waiting up to
/// `timeout_ms` for its answer.
fn queries_over(
    place: Place<'_>,
    server: &str,
    name: &str,
    count: u64,
    timeout_ms: u64,
    how: &str,
) -> anyhow::Result<Calls> {
    let to = SocketAddr::new(server.parse()?, 53).to_string();
    let (count, timeout_ms) = (count.to_string(), timeout_ms.to_string());
    let args = ["--server", &to, "--name", name, how, "--count", &count, "--timeout-ms", &timeout_ms];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    calls::run_command(place, &mut crate::helpers::command("dns-calls", &args))
}

fn require(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)
}

/// The counters of a run stopped by SIGINT (its abort event's).
fn counters(ended: &runner::Ended) -> anyhow::Result<serde_json::Value> {
    Ok(ended.aborted_by("SIGINT")?["counters"].clone())
}

/// With `--name '*.example.test' --name exact.other.test`, each answer
/// kind in turn: dig in the target gets that status for names under
/// example.test and for exact.other.test — from the resolver over IPv4
/// and IPv6 and from the cache on loopback — and real answers for the
/// zone itself, for other names and for a name below the exact one; the
/// sibling's dig gets real answers for the same names; chaos answered as
/// many queries as dig saw answered.
pub fn answers_matching_names_with_the_rcode(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let w = World::new()?;
    for (answer, status) in [("nxdomain", "NXDOMAIN"), ("servfail", "SERVFAIL"), ("refused", "REFUSED")] {
        let run = w.attack(&[
            "--name",
            "*.example.test",
            "--name",
            "exact.other.test",
            "--answer",
            answer,
            "--duration",
            "120s",
        ])?;
        // (who, server, name, answered by chaos?)
        let cases: &[(&str, &str, &str, bool)] = &[
            ("target", UPSTREAM, "www.example.test", true),
            ("target", UPSTREAM6, "a.b.example.test", true),
            ("target", CACHE, "WWW.Example.Test", true),
            ("target", UPSTREAM, "exact.other.test", true),
            ("target", UPSTREAM, "example.test", false),
            ("target", UPSTREAM, "sub.exact.other.test", false),
            ("target", CACHE, "other.test", false),
            ("target", UPSTREAM, "www.example.test.other.test", false),
            ("sibling", UPSTREAM, "www.example.test", false),
            ("sibling", CACHE, "exact.other.test", false),
        ];
        let mut seen = Vec::new();
        for (who, server, name, hit) in cases {
            let place = if *who == "target" { w.target() } else { w.sibling() };
            seen.push((who, server, name, hit, dig(place, server, name)));
        }
        run.signal(libc::SIGINT);
        let ended = run.wait(Duration::from_secs(30))?;
        for (who, server, name, hit, got) in seen {
            let (got, address) = got?;
            let want = if *hit { status } else { "NOERROR" };
            anyhow::ensure!(
                got == want && (*hit || address.is_some()),
                "--answer {answer}: {who}'s dig @{server} {name}: {got} {address:?}, expected {want}"
            );
        }
        let c = counters(&ended)?;
        anyhow::ensure!(c["answered"] == 4 && c["matched"] == 4, "--answer {answer}: chaos's counters {c}");
    }
    Ok(())
}

/// glibc (`getent hosts`) and a Python client retrying on its own fail at
/// once, every attempt, with the error their libraries give for the
/// answer (NXDOMAIN: not found, EAI_NONAME; SERVFAIL: EAI_AGAIN) — asking
/// the resolver or the cache; the sibling's lookups of the same name
/// succeed.
pub fn real_resolvers_see_the_error(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let w = World::new()?;
    let name = "api.example.test";
    for (answer, gai) in [("nxdomain", "-2"), ("servfail", "-3")] {
        let run = w.attack(&["--name", name, "--answer", answer, "--duration", "120s"])?;
        let results = (|| {
            let mut r = Vec::new();
            for server in [UPSTREAM, CACHE] {
                let resolv = w.resolv(server);
                r.push((server, getent(w.target(), &resolv, name)?, getent(w.sibling(), &resolv, name)?));
            }
            Ok::<_, anyhow::Error>((r, python(w.target(), &w.resolv(UPSTREAM), name)?))
        })();
        run.signal(libc::SIGINT);
        run.wait(Duration::from_secs(30))?;
        let (results, py) = results?;
        for (server, (code, out, took), (sib_code, sib_out, _)) in results {
            // getent(1): exit 2, "one or more supplied key could not be
            // found in the database".
            anyhow::ensure!(
                code == 2 && out.is_empty(),
                "--answer {answer}: getent in the target via {server}: exit {code}: {out}"
            );
            // An answer, not a timeout (however slow the machine: a
            // process start is far from seconds).
            anyhow::ensure!(took < RESOLV_TIMEOUT / 2, "getent took {took:?}: not answered at once");
            eprint!("[{answer} via {server}: getent failed in {} ms] ", took.as_millis());
            anyhow::ensure!(
                sib_code == 0 && sib_out.starts_with("10.1.2.3"),
                "--answer {answer}: getent in the sibling via {server}: exit {sib_code}: {sib_out}"
            );
        }
        anyhow::ensure!(
            py == [gai; 5].join(";"),
            "--answer {answer}: python in the target, 5 attempts: {py}"
        );
    }
    Ok(())
}

/// `--percent 30 --answer servfail`: the SERVFAILs of 400 queries are a
/// binomial share, every other query gets the resolver's answer, and
/// chaos counted what the client saw. `--answer timeout`: no query of the
/// target is answered, the sibling's all are; after the attack, the
/// target's are again.
pub fn fails_the_configured_share_and_times_out(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    let w = World::new()?;
    share_and_timeout(&w, UDP, 400, 20)
}

/// `dig +tcp` once, as [`dig`] does over UDP.
fn dig_tcp(place: Place<'_>, server: &str, name: &str) -> anyhow::Result<(String, Option<String>)> {
    dig_with(place, server, name, &["+tcp"])
}

/// Over TCP, where the kernel has sk_msg (chaos-ebpf/src/dns/tcp.rs):
/// - `--answer nxdomain --name '*.example.test'`: `dig +tcp` in the target
///   gets NXDOMAIN from the resolver over IPv4 and IPv6 and from the cache
///   on loopback, a real answer for other.test, and the sibling a real
///   answer for the same name; 20 queries written as length, then message
///   (two sends) pass to the resolver, as documented; glibc told to use TCP
///   (`RES_OPTIONS=use-vc`) fails at once in the target and resolves in
///   the sibling; chaos's counters equal what the clients saw;
/// - `--percent 30 --answer servfail`: the SERVFAILs of 300 TCP queries
///   are a binomial share, every other one gets the resolver's answer;
/// - `--answer timeout`: no TCP query of the target is answered, other
///   names and the sibling's are, and after the attack the target's are.
pub fn acts_on_lookups_over_tcp(ctx: &mut Ctx) -> anyhow::Result<()> {
    require(ctx)?;
    ctx.require(Capability::SkMsg)?;
    let w = World::new()?;
    let run = w.attack(&["--name", "*.example.test", "--answer", "nxdomain", "--duration", "120s"])?;
    let seen = (|| {
        let cases = [
            ("target", UPSTREAM, "www.example.test", true),
            ("target", UPSTREAM6, "a.b.example.test", true),
            ("target", CACHE, "WWW.Example.Test", true),
            ("target", UPSTREAM, "other.test", false),
            ("sibling", UPSTREAM, "www.example.test", false),
        ];
        let mut seen = Vec::new();
        for (who, server, name, hit) in cases {
            let place = if who == "target" { w.target() } else { w.sibling() };
            seen.push((who, server, name, hit, dig_tcp(place, server, name)?));
        }
        let split = queries_over(w.target(), UPSTREAM, "split.example.test", 20, 2000, TCP_SPLIT)?;
        Ok::<_, anyhow::Error>((seen, split))
    })();
    run.signal(libc::SIGINT);
    let ended = run.wait(Duration::from_secs(30))?;
    let (seen, split) = seen?;
    for (who, server, name, hit, (got, address)) in seen {
        let want = if hit { "NXDOMAIN" } else { "NOERROR" };
        anyhow::ensure!(
            got == want && (hit || address.is_some()),
            "{who}'s dig +tcp @{server} {name}: {got} {address:?}, expected {want}"
        );
    }
    // Passed, as documented: the length alone is not a query.
    anyhow::ensure!(
        split.ok == 20,
        "length and message in two sends, not answered by dnsmasq: {:?}",
        split.errnos
    );
    let c = counters(&ended)?;
    anyhow::ensure!(c["answered"] == 3 && c["matched"] == 3, "chaos's counters {c}");

    let name = "api.example.test";
    let run = w.attack(&["--name", name, "--answer", "nxdomain", "--duration", "120s"])?;
    let resolv = w.resolv(UPSTREAM);
    let got =
        getent_tcp(w.target(), &resolv, name).and_then(|t| Ok((t, getent_tcp(w.sibling(), &resolv, name)?)));
    run.signal(libc::SIGINT);
    let ended = run.wait(Duration::from_secs(30))?;
    let ((code, out, took), (sib_code, sib_out, _)) = got?;
    anyhow::ensure!(code == 2 && out.is_empty(), "getent (use-vc) in the target: exit {code}: {out}");
    anyhow::ensure!(took < RESOLV_TIMEOUT / 2, "getent (use-vc) took {took:?}: not answered at once");
    anyhow::ensure!(
        sib_code == 0 && sib_out.starts_with("10.1.2.3"),
        "getent (use-vc) in the sibling: exit {sib_code}: {sib_out}"
    );
    let c = counters(&ended)?;
    anyhow::ensure!(c["answered"].as_u64() >= Some(1), "chaos answered no lookup over TCP: {c}");
    eprint!("[getent over TCP failed in {} ms] ", took.as_millis());

    share_and_timeout(&w, TCP, 300, 10)
}

/// `--percent 30 --answer servfail` on `share` queries sent `how`: the
/// SERVFAILs are a binomial share, every other query gets the resolver's
/// answer, chaos counted what the client saw. `--answer timeout` on
/// `none` queries: none of the target's is answered, other names and the
/// sibling's are, and after the attack the target's are again.
fn share_and_timeout(w: &World, how: &str, share: u64, none: u64) -> anyhow::Result<()> {
    let name = "svc.example.test";
    let servfails = check_rate_measured(&format!("queries ({how}) answered SERVFAIL"), 0.3, || {
        let run = w.attack(&["--percent", "30", "--answer", "servfail", "--duration", "120s"])?;
        let c = queries_over(w.target(), UPSTREAM, name, share, 2000, how);
        run.signal(libc::SIGINT);
        let ended = run.wait(Duration::from_secs(30))?;
        let c = c?;
        anyhow::ensure!(c.with(SERVFAIL) == c.failed(), "other outcomes than SERVFAIL: {:?}", c.errnos);
        let k = counters(&ended)?;
        anyhow::ensure!(
            k["answered"].as_u64() == Some(c.failed()) && k["matched"].as_u64() == Some(share),
            "chaos's counters {k} vs {} SERVFAILs of {share}",
            c.failed()
        );
        Ok((c.failed(), c.calls))
    })?;
    eprint!("[{how}: {servfails} of {share} SERVFAIL at 30%] ");
    let run = w.attack(&["--answer", "timeout", "--name", "*.example.test", "--duration", "120s"])?;
    let target = queries_over(w.target(), UPSTREAM, name, none, 300, how);
    let other = queries_over(w.target(), UPSTREAM, "other.test", none, 2000, how);
    let sibling = queries_over(w.sibling(), UPSTREAM, name, none, 2000, how);
    run.signal(libc::SIGINT);
    let ended = run.wait(Duration::from_secs(30))?;
    let after = queries_over(w.target(), UPSTREAM, name, none, 2000, how)?;
    let (target, other, sibling) = (target?, other?, sibling?);
    anyhow::ensure!(target.with(libc::ETIMEDOUT) == none, "{how}: the target's queries: {:?}", target.errnos);
    anyhow::ensure!(
        other.ok == none && sibling.ok == none,
        "{how}: others answered: {:?} {:?}",
        other.errnos,
        sibling.errnos
    );
    anyhow::ensure!(after.ok == none, "{how}: after the attack: {:?}", after.errnos);
    let k = counters(&ended)?;
    anyhow::ensure!(k["dropped"].as_u64() == Some(none) && k["answered"] == 0, "{how}: chaos's counters {k}");
    Ok(())
}

/// `getent hosts` with glibc told to ask over TCP (`RES_OPTIONS=use-vc`,
/// resolv.conf(5)).
fn getent_tcp(
    place: Place<'_>,
    resolv: &std::path::Path,
    name: &str,
) -> anyhow::Result<(i32, String, Duration)> {
    getent_with(place, resolv, name, &[("RES_OPTIONS", "use-vc")])
}

/// Bad flags: exit code 3, a message naming the flag and the fix, nothing
/// loaded.
pub fn bad_flags_are_refused(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let target = Cgroup::new("dns-flags")?;
    let many: Vec<String> = (0..65).map(|i| format!("n{i}.example.test")).collect();
    let mut too_many = Vec::new();
    for n in &many {
        too_many.extend(["--name", n.as_str()]);
    }
    let long = format!("{}.test", "a".repeat(64));
    let cases: &[(&[&str], &str)] = &[
        (&["--name", "exa mple.test"], "--name"),
        (&["--name", "www.*.test"], "*."),
        (&["--name", &long], "63"),
        (&["--name", "a..test"], "--name"),
        (&["--answer", "noerror"], "invalid value 'noerror'"),
        (&["--percent", "0"], "--percent 0"),
        (&["--percent", "101"], "outside 0..100"),
        (&too_many, "64"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["attack", "dns-error", "--cgroup", &target.rel, "--duration", "10s"];
        args.extend_from_slice(flags);
        let shown: Vec<&str> = flags.iter().take(4).copied().collect();
        runner::run(&args)?.refused(&format!("{shown:?}"), says)?;
        anyhow::ensure!(DnsError::loaded().is_empty(), "{shown:?}: loaded {:?}", DnsError::loaded());
    }
    Ok(())
}

/// The safety suite's view of dns-error: a stream of queries from the
/// target, one per millisecond, each timed, one in eight over TCP (TCP
/// stays answered by the resolver where the kernel has no sk_msg);
/// NXDOMAIN while the fault holds.
pub struct DnsError {
    w: World,
}

impl Family for DnsError {
    /// One program, but a long verification (its name walk: some 37,000
    /// instructions processed, 1.6 s on 6.1 under emulation); chaos
    /// started in 2.2 s on 5.10 there, and 8 s is over 3.5 times that.
    const DEADLINE: &'static str = "8s";
    const DEADLINE_MEASURE_S: f64 = 9.5;
    const EXIT_WITHIN: Duration = Duration::from_secs(20);
    type Prepared = Waiting;
    type Measuring = std::thread::JoinHandle<anyhow::Result<Calls>>;
    type Measured = Calls;

    fn require(ctx: &mut Ctx) -> anyhow::Result<()> {
        require(ctx)
    }

    /// Netlink filters are not fds (see net_loss's).
    fn require_fd_links(ctx: &mut Ctx) -> anyhow::Result<()> {
        ctx.require(Capability::Tcx)
    }

    fn new() -> anyhow::Result<Self> {
        Ok(Self { w: World::new()? })
    }

    fn prepare(&self, seconds: f64) -> anyhow::Result<Waiting> {
        let secs = seconds.to_string();
        let to = format!("{UPSTREAM}:53");
        let args = [
            "--server",
            &to,
            "--name",
            "www.example.test",
            "--udp-and-tcp",
            "--timeout-ms",
            "500",
            "--seconds",
            &secs,
            "--interval-us",
            "1000",
            "--timeline",
            "--wait",
        ];
        Waiting::start(self.w.target(), "dns-calls", &args)
    }

    fn attack(&self, duration: &str) -> anyhow::Result<ChaosRun> {
        self.w.attack(&["--duration", duration])
    }

    fn measure(&self, prepared: Waiting, _seconds: f64) -> anyhow::Result<Self::Measuring> {
        Ok(std::thread::spawn(move || prepared.calls()))
    }

    fn finish(&self, measuring: Self::Measuring) -> anyhow::Result<Calls> {
        measuring.join().map_err(|_| anyhow::anyhow!("query stream thread panicked"))?
    }

    fn ensure_ended(&self, c: &Calls, window: Window, what: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            c.failures.iter().all(|f| f[1] == NXDOMAIN as u64),
            "{what}: other outcomes than NXDOMAIN: {:?}",
            c.errnos
        );
        c.ensure_ended("queries", 50, window.to_ns + window.grace_ns, window.to_ns, what)
    }

    fn loaded() -> Vec<String> {
        super::safety::programs_loaded(PROGRAMS)
    }

    /// As net-loss's: TCX links go with the loader's fds, and the kernel
    /// frees the program after an RCU grace period.
    fn unloaded_within(ending: Ending) -> Option<Duration> {
        match ending {
            Ending::Deadline | Ending::Kill9 => Some(Duration::from_secs(2)),
            Ending::Signal | Ending::Hung => None,
        }
    }

    fn check_counters(c: &Calls, abort: &serde_json::Value) -> anyhow::Result<()> {
        anyhow::ensure!(
            abort["counters"]["answered"].as_u64() == Some(c.failures.len() as u64),
            "counters {} vs {} NXDOMAINs seen",
            abort["counters"],
            c.failures.len()
        );
        Ok(())
    }
}
