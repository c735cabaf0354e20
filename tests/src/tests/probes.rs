//! Probes under the conditions they exist for: `chaos run` end to end with
//! an HTTPS service behind a private CA, a DNS server that never answers,
//! and an address whose packets are dropped.
//!
//! What is measured comes from outside the probe: the TLS server is
//! `openssl s_server`, the DNS server is a UDP socket of this test that
//! counts the queries it swallows, the black hole is a neighbour entry
//! whose frames the peer's stack discards. Timing bounds compare each
//! probe's recorded latency with the timeout it was given in the same file.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use super::net_loss::EGRESS;
use crate::{
    fixtures::{
        lab::Lab,
        runner,
        scratch::{Killed, PrivDir, with_resolv_conf},
    },
    harness::Ctx,
};

/// Every probe here gets this timeout.
const TIMEOUT: Duration = Duration::from_millis(1000);
/// How late past its timeout a probe may report: its thread's start and
/// the run's bookkeeping on a loaded 2-core machine. The failures these
/// tests guard against are far longer (the C library waits 30 s for the
/// silent DNS server configured below; a dropped SYN is retried for
/// minutes).
const MARGIN: Duration = Duration::from_millis(700);

/// An experiment on the lab's target whose hypothesis is `probes` (YAML
/// list items, indented for `probes:`); the method, never reached when the
/// steady state fails, loses discard-port UDP for a second.
fn experiment(lab: &Lab, probes: &str) -> String {
    format!(
        "name: probes\n\
         targets:\n  app:\n    cgroup: {cgroup}\n\
         hypothesis:\n  recover-within: 5s\n  probes:\n{probes}\
         method:\n  - name: quiet\n    fault: net-loss\n    percent: 100\n    protocol: udp\n    port: 9\n    duration: 1s\n",
        cgroup = lab.target.rel,
    )
}

/// A probe item for [`experiment`], with [`TIMEOUT`].
fn probe(name: &str, check: &str) -> String {
    probe_with(name, check, TIMEOUT)
}

fn probe_with(name: &str, check: &str, timeout: Duration) -> String {
    format!(
        "    - name: {name}\n{check}\n      interval: 200ms\n      timeout: {}ms\n      failures: 1\n",
        timeout.as_millis()
    )
}

/// The HTTPS test is about trust, not time: a TLS handshake (both ends
/// doing elliptic-curve arithmetic) takes over a second under QEMU's TCG.
const TLS_TIMEOUT: Duration = Duration::from_secs(15);

/// `openssl args...` in `dir`; fail with its stderr.
fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it
/// (`srv.pem`, `srv.key`), in `dir`.
fn make_certificates(dir: &Path) -> anyhow::Result<()> {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=chaos-test private CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca)?;
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend(["-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1"]);
    openssl(dir, &csr)?;
    std::fs::write(
        dir.join("srv.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "srv.ext",
        ],
    )
}

/// `chaos run FILE --report DIR/report.json --no-live`, the child made
/// ready by `setup` between fork and exec; waits at most two minutes.
/// Returns the exit code, stderr, the report and the wall time.
fn run_chaos(
    dir: &PrivDir,
    file: &Path,
    resolv: Option<&Path>,
) -> anyhow::Result<(Option<i32>, String, Value, Duration)> {
    let report = dir.path("report.json");
    let _ = std::fs::remove_file(&report);
    let mut cmd = Command::new(runner::bin());
    cmd.arg("run")
        .arg(file)
        .arg("--report")
        .arg(&report)
        .arg("--no-live")
        .env("CHAOS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(resolv) = resolv {
        with_resolv_conf(&mut cmd, resolv)?;
    }
    let started = Instant::now();
    let child = Killed(cmd.spawn()?);
    let mut child = child;
    let mut stderr = child.0.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.0.try_wait()? {
            break s;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "chaos run did not end in 120 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let stderr = reader.join().unwrap_or_default();
    let text = std::fs::read_to_string(&report)
        .map_err(|e| anyhow::anyhow!("no report ({e}); exit {:?}, stderr:\n{stderr}", status.code()))?;
    Ok((status.code(), stderr, serde_json::from_str(&text)?, took))
}

/// The steady-state check of probe `name` in a report.
fn check<'a>(report: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    report["steady_state"]["probes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .ok_or_else(|| anyhow::anyhow!("no steady-state check of `{name}`: {}", report["steady_state"]))
}

/// Probe `name` failed, saying `says`, no sooner than its timeout and no
/// later than [`MARGIN`] after it.
fn failed_at_timeout(report: &Value, name: &str, says: &[&str]) -> anyhow::Result<f64> {
    let c = check(report, name)?;
    let detail = c["detail"].as_str().unwrap_or_default();
    anyhow::ensure!(c["ok"] == false, "`{name}` passed: {c}");
    for s in says {
        anyhow::ensure!(detail.contains(s), "`{name}` does not say {s:?}: {detail}");
    }
    let ms = c["latency_ms"].as_f64().unwrap_or(-1.0);
    let (lo, hi) = (TIMEOUT.as_secs_f64() * 1000.0, (TIMEOUT + MARGIN).as_secs_f64() * 1000.0);
    anyhow::ensure!(
        ms >= lo - 1.0 && ms <= hi,
        "`{name}` failed after {ms:.0} ms; its timeout is {lo:.0} ms (allowed up to {hi:.0}): {detail}"
    );
    Ok(ms)
}

fn ensure_not_started(code: Option<i32>, stderr: &str, report: &Value) -> anyhow::Result<()> {
    anyhow::ensure!(code == Some(2), "exit code {code:?}, expected 2 (not started); stderr:\n{stderr}");
    anyhow::ensure!(report["verdict"] == "not-started", "verdict {}", report["verdict"]);
    anyhow::ensure!(report["steady_state"]["held"] == false, "{}", report["steady_state"]);
    Ok(())
}

/// An HTTPS service whose certificate a private CA signed: with that CA as
/// `ca-file` the probe passes and the experiment runs to its end (exit 0);
/// without it the steady state fails, naming the certificate problem, and
/// nothing is injected (exit 2).
pub fn https_with_a_private_ca(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let lab = Lab::new()?;
    let dir = PrivDir::new("tls")?;
    make_certificates(dir.dir())?;
    // `-WWW` serves files from its working directory: GET /health is ./health.
    dir.write("health", "ok\n")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let accept = format!("127.0.0.1:{port}");
    let server = Killed(
        Command::new("openssl")
            .args(["s_server", "-accept", &accept, "-cert", "srv.pem", "-key", "srv.key", "-WWW", "-quiet"])
            .current_dir(dir.dir())
            // Held open: s_server must not see end-of-input.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let t = Instant::now();
    while TcpStream::connect(&accept).is_err() {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(10), "openssl s_server did not listen on {accept}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ca = dir.path("ca.pem");
    let url = format!("https://127.0.0.1:{port}/health");
    let with_ca = experiment(
        &lab,
        &probe_with(
            "tls",
            &format!(
                "      http:\n        url: {url}\n        ca-file: {}\n      tolerance:\n        body-contains: ok",
                ca.display()
            ),
            TLS_TIMEOUT,
        ),
    );
    let file = dir.write("with-ca.yaml", &with_ca)?;
    let (code, stderr, report, _) = run_chaos(&dir, &file, None)?;
    anyhow::ensure!(code == Some(0), "with ca-file: exit {code:?}, expected 0; stderr:\n{stderr}");
    anyhow::ensure!(report["verdict"] == "held", "with ca-file: verdict {}", report["verdict"]);
    let c = check(&report, "tls")?;
    anyhow::ensure!(c["ok"] == true && c["detail"].as_str().unwrap_or("").starts_with("200 in "), "{c}");

    let without = experiment(
        &lab,
        &probe_with(
            "tls",
            &format!("      http:\n        url: {url}\n      tolerance:\n        body-contains: ok"),
            TLS_TIMEOUT,
        ),
    );
    let file = dir.write("without-ca.yaml", &without)?;
    let (code, stderr, report, _) = run_chaos(&dir, &file, None)?;
    ensure_not_started(code, &stderr, &report)?;
    let detail = check(&report, "tls")?["detail"].as_str().unwrap_or_default().to_owned();
    anyhow::ensure!(
        detail.contains("invalid peer certificate") && detail.contains("UnknownIssuer"),
        "the failure does not name the certificate problem: {detail}"
    );
    drop(server);
    Ok(())
}

/// A UDP "DNS server" on a loopback address: reads queries, counts them,
/// never answers. Stopped on drop.
struct SilentDns {
    addr: SocketAddr,
    queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentDns {
    fn start() -> anyhow::Result<Self> {
        // Any 127/8 address is local; one no resolver of the machine uses.
        let socket = (1..=250u8)
            .find_map(|last| UdpSocket::bind(SocketAddr::from(([127, 88, 0, last], 53))).ok())
            .ok_or_else(|| anyhow::anyhow!("no free 127.88.0.x:53"))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let queries = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, s) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::SeqCst) {
                if socket.recv_from(&mut buf).is_ok() {
                    q.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Ok(Self { addr, queries, stop, thread: Some(thread) })
    }
}

impl Drop for SilentDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// HTTP and TCP probes of a name whose DNS server never answers fail at
/// their timeout, not at the C library's (30 s here), and the run ends
/// not-started. chaos runs in a mount namespace of its own where
/// /etc/resolv.conf names the silent server; the machine's file is left
/// as it was.
pub fn unanswered_dns_fails_within_the_timeout(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let lab = Lab::new()?;
    let dir = PrivDir::new("dns")?;
    let dns = SilentDns::start()?;
    let resolv =
        dir.write("resolv.conf", &format!("nameserver {}\noptions timeout:30 attempts:1\n", dns.addr.ip()))?;
    let machine_resolv = std::fs::read("/etc/resolv.conf").ok();
    let name = "svc.chaos-test.invalid";
    let probes = probe("http-name", &format!("      http:\n        url: http://{name}:8080/health"))
        + &probe("tcp-name", &format!("      tcp:\n        address: {name}:8080"));
    let file = dir.write("dns.yaml", &experiment(&lab, &probes))?;
    let (code, stderr, report, took) = run_chaos(&dir, &file, Some(&resolv))?;
    anyhow::ensure!(
        std::fs::read("/etc/resolv.conf").ok() == machine_resolv,
        "the machine's /etc/resolv.conf changed"
    );
    ensure_not_started(code, &stderr, &report)?;
    let http_ms = failed_at_timeout(&report, "http-name", &["timed out", name])?;
    let tcp_ms = failed_at_timeout(&report, "tcp-name", &["timed out", "resolving", name])?;
    let queries = dns.queries.load(Ordering::SeqCst);
    anyhow::ensure!(queries > 0, "the silent DNS server saw no query: the probes did not resolve through it");
    anyhow::ensure!(
        took < Duration::from_secs(30),
        "chaos run took {took:?}: as long as the C library's own DNS timeout"
    );
    eprintln!(
        "  dns: http probe failed after {http_ms:.0} ms, tcp after {tcp_ms:.0} ms (timeout {} ms); {queries} \
         queries swallowed; run {took:.1?}",
        TIMEOUT.as_millis()
    );
    Ok(())
}

/// HTTP and TCP probes of an address whose packets are dropped without a
/// word (its neighbour entry names a MAC no one has: the peer's stack
/// discards the frames as another host's) fail at their timeout.
pub fn black_holed_address_fails_within_the_timeout(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.require_any(EGRESS)?;
    let lab = Lab::new()?;
    let dir = PrivDir::new("hole")?;
    let hole = "10.77.0.99";
    lab.ctr.ip(&[
        "neigh",
        "add",
        hole,
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        &lab.ctr_dev,
        "nud",
        "permanent",
    ])?;
    let netns = &lab.ctr.name;
    let probes =
        probe(
            "http-hole",
            &format!("      netns: {netns}\n      http:\n        url: http://{hole}:8080/health"),
        ) + &probe("tcp-hole", &format!("      netns: {netns}\n      tcp:\n        address: {hole}:8080"));
    let file = dir.write("hole.yaml", &experiment(&lab, &probes))?;
    let (code, stderr, report, _) = run_chaos(&dir, &file, None)?;
    ensure_not_started(code, &stderr, &report)?;
    let http_ms = failed_at_timeout(&report, "http-hole", &["timed out", hole])?;
    let tcp_ms = failed_at_timeout(&report, "tcp-hole", &["timed out", hole])?;
    eprintln!(
        "  black hole: http probe failed after {http_ms:.0} ms, tcp after {tcp_ms:.0} ms (timeout {} ms)",
        TIMEOUT.as_millis()
    );
    Ok(())
}
