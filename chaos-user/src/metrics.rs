//! Live counters in the Prometheus text format (`--metrics-addr`), so that
//! dashboards can put "chaos was injecting here" next to the symptoms —
//! telling injected failures from cascading ones.
//!
//! A tiny HTTP server on a thread answers `GET /metrics` from a snapshot
//! the runner updates every tick; nothing here touches the kernel.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    counters::Counters,
    error::{Error, Result},
    probes::{Role, Stats},
};

/// What is exported, updated by the runner.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Mutex<State>>,
}

struct State {
    experiment: String,
    phase: &'static str,
    started: Instant,
    attacks: BTreeMap<String, AttackState>,
    probes: BTreeMap<String, (Role, Stats)>,
}

struct AttackState {
    fault: String,
    target: String,
    active: bool,
    counters: Counters,
}

/// The phases of a run, in order.
pub const PHASES: &[&str] = &["plan", "steady-state", "method", "recovery", "done"];

impl Metrics {
    pub fn new(experiment: &str) -> Self {
        Self {
            inner: Arc::new(Mutex::new(State {
                experiment: experiment.to_owned(),
                phase: "plan",
                started: Instant::now(),
                attacks: BTreeMap::new(),
                probes: BTreeMap::new(),
            })),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn phase(&self, phase: &'static str) {
        self.with(|s| s.phase = phase);
    }

    pub fn attack(&self, id: &str, fault: &str, target: &str, active: bool, counters: &Counters) {
        self.with(|s| {
            s.attacks.insert(
                id.to_owned(),
                AttackState {
                    fault: fault.to_owned(),
                    target: target.to_owned(),
                    active,
                    counters: counters.clone(),
                },
            );
        });
    }

    pub fn probe(&self, name: &str, role: Role, stats: &Stats) {
        self.with(|s| {
            s.probes.insert(name.to_owned(), (role, stats.clone()));
        });
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        self.with(|s| {
            let mut out = String::new();
            let exp = esc(&s.experiment);
            family(&mut out, "chaos_experiment_info", "gauge", "The experiment this chaos process runs.");
            let _ = writeln!(out, "chaos_experiment_info{{experiment=\"{exp}\"}} 1");
            family(&mut out, "chaos_experiment_phase", "gauge", "1 for the phase the run is in.");
            for p in PHASES {
                let v = u8::from(*p == s.phase);
                let _ = writeln!(out, "chaos_experiment_phase{{experiment=\"{exp}\",phase=\"{p}\"}} {v}");
            }
            family(&mut out, "chaos_experiment_elapsed_seconds", "gauge", "Time since the run started.");
            let _ = writeln!(
                out,
                "chaos_experiment_elapsed_seconds{{experiment=\"{exp}\"}} {:.3}",
                s.started.elapsed().as_secs_f64()
            );
            family(&mut out, "chaos_attack_active", "gauge", "1 while the attack's fault is in force.");
            for (id, a) in &s.attacks {
                let _ = writeln!(
                    out,
                    "chaos_attack_active{{attack=\"{}\",fault=\"{}\",target=\"{}\"}} {}",
                    esc(id),
                    esc(&a.fault),
                    esc(&a.target),
                    u8::from(a.active)
                );
            }
            let counters: [CounterMetric; 3] = [
                (
                    "chaos_attack_matched_total",
                    "Events of the target that matched the attack's filters.",
                    |c| c.matched,
                ),
                (
                    "chaos_attack_injected_total",
                    "Events the fault was injected into (packets dropped, ...).",
                    |c| c.injected,
                ),
                (
                    "chaos_attack_expired_total",
                    "Events that found the rule past its kernel-side deadline and passed.",
                    |c| c.expired,
                ),
            ];
            for (name, help, get) in counters {
                family(&mut out, name, "counter", help);
                for (id, a) in &s.attacks {
                    let _ = writeln!(out, "{name}{{attack=\"{}\"}} {}", esc(id), get(&a.counters));
                }
            }
            // Not `chaos_attack_counter_total`: promtool's lint refuses a
            // metric type in a metric name.
            family(
                &mut out,
                "chaos_attack_events_total",
                "counter",
                "Fault-specific event counts, by event (egress_dropped, ...).",
            );
            for (id, a) in &s.attacks {
                for (k, v) in &a.counters.detail {
                    let _ = writeln!(
                        out,
                        "chaos_attack_events_total{{attack=\"{}\",event=\"{k}\"}} {v}",
                        esc(id)
                    );
                }
            }
            let probe_metrics: [ProbeMetric; 4] = [
                ("chaos_probe_healthy", "gauge", "1 while the probe is within its tolerance.", |st| {
                    u8::from(st.healthy).to_string()
                }),
                ("chaos_probe_checks_total", "counter", "Checks the probe ran.", |st| st.checks.to_string()),
                ("chaos_probe_failures_total", "counter", "Checks that failed.", |st| st.failed.to_string()),
                ("chaos_probe_latency_seconds", "gauge", "Latency of the last check.", |st| {
                    st.last.as_ref().map_or("NaN".into(), |l| format!("{:.6}", l.latency.as_secs_f64()))
                }),
            ];
            for (name, kind, help, get) in probe_metrics {
                family(&mut out, name, kind, help);
                for (probe, (role, stats)) in &s.probes {
                    let role = match role {
                        Role::Hypothesis => "hypothesis",
                        Role::Abort => "abort",
                    };
                    let _ =
                        writeln!(out, "{name}{{probe=\"{}\",role=\"{role}\"}} {}", esc(probe), get(stats));
                }
            }
            out
        })
    }
}

/// Name, help, and how to read it from an attack's counters.
type CounterMetric = (&'static str, &'static str, fn(&Counters) -> u64);
/// Name, type, help, and how to read it from a probe's statistics.
type ProbeMetric = (&'static str, &'static str, &'static str, fn(&Stats) -> String);

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escape a label value (exposition format: backslash, quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// How long one connection may take, all reads and writes included. A
/// scraper that connects and sends nothing, or reads slowly, costs its own
/// thread this long at most and delays no one else.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(2);

/// Connections answered at once; more are closed unanswered (a scraper
/// retries at its next interval). Bounds the threads a flood can start.
const MAX_CONNECTIONS: usize = 16;

/// How often the accept loop looks at the stop flag: the most that
/// dropping the server can wait.
const POLL: Duration = Duration::from_millis(20);

/// The HTTP endpoint; stops when dropped, at once: connections in flight
/// finish (or time out) on their own threads without holding up the caller,
/// so a stalled scraper never delays the end of a run.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Serve `metrics` on `addr` (`/metrics`).
pub fn serve(addr: SocketAddr, metrics: Metrics) -> Result<Server> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| Error::environment(format!("--metrics-addr {addr}: cannot listen there: {e}")))?;
    let addr = listener.local_addr()?;
    // Non-blocking, so that the loop sees the stop flag within POLL.
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let busy = Arc::new(AtomicUsize::new(0));
    let thread = std::thread::Builder::new().name("metrics".into()).spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((conn, _)) => dispatch(conn, &metrics, &busy),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    })?;
    Ok(Server { addr, stop, thread: Some(thread) })
}

/// Answer `conn` on a thread of its own, unless MAX_CONNECTIONS are busy.
fn dispatch(conn: TcpStream, metrics: &Metrics, busy: &Arc<AtomicUsize>) {
    if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        busy.fetch_sub(1, Ordering::SeqCst);
        return; // dropped: closed
    }
    let (metrics, count) = (metrics.clone(), busy.clone());
    let spawned = std::thread::Builder::new().name("metrics-conn".into()).spawn(move || {
        let _ = answer(conn, &metrics, Instant::now() + CONNECTION_DEADLINE);
        count.fetch_sub(1, Ordering::SeqCst);
    });
    if spawned.is_err() {
        busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Time left until `deadline`, as a socket timeout (which must not be zero).
fn left(deadline: Instant) -> std::io::Result<Duration> {
    let t = deadline.saturating_duration_since(Instant::now());
    if t.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    Ok(t)
}

fn answer(mut conn: TcpStream, metrics: &Metrics, deadline: Instant) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        conn.set_read_timeout(Some(left(deadline)?))?;
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let request = String::from_utf8_lossy(&buf);
    let target = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, kind, body) = match target.split('?').next().unwrap_or("/") {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render()),
        "/" => ("200 OK", "text/plain; charset=utf-8", "chaos: counters at /metrics\n".to_owned()),
        _ => ("404 Not Found", "text/plain; charset=utf-8", "not found; try /metrics\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // Written piecewise so that a slow reader is cut off at the deadline,
    // not after a fresh timeout per write.
    let mut rest = response.as_bytes();
    while !rest.is_empty() {
        conn.set_write_timeout(Some(left(deadline)?))?;
        match conn.write(rest)? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => rest = &rest[n..],
        }
    }
    conn.flush()
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The accept loop never blocks on a connection: this returns within POLL.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::{
        Sample,
        http::{HttpUrl, request},
    };

    fn counters(matched: u64, injected: u64) -> Counters {
        Counters { matched, injected, expired: 0, detail: BTreeMap::from([("egress_dropped", injected)]) }
    }

    #[test]
    fn renders_exposition_format() {
        let m = Metrics::new("loss \"demo\"");
        m.phase("method");
        m.attack("net-loss-1", "net-loss", "/sys/fs/cgroup/a", true, &counters(100, 5));
        let mut stats = Stats::default();
        stats.checks = 3;
        stats.failed = 1;
        stats.healthy = true;
        stats.last = Some(Sample::pass(Duration::from_millis(12), "200".into()));
        m.probe("api", Role::Hypothesis, &stats);
        let text = m.render();
        assert!(text.contains("chaos_experiment_info{experiment=\"loss \\\"demo\\\"\"} 1\n"), "{text}");
        assert!(text.contains("phase=\"method\"} 1\n") && text.contains("phase=\"plan\"} 0\n"), "{text}");
        assert!(text.contains(
            "chaos_attack_active{attack=\"net-loss-1\",fault=\"net-loss\",target=\"/sys/fs/cgroup/a\"} 1\n"
        ));
        assert!(text.contains("chaos_attack_injected_total{attack=\"net-loss-1\"} 5\n"), "{text}");
        assert!(
            text.contains("chaos_attack_events_total{attack=\"net-loss-1\",event=\"egress_dropped\"} 5\n")
        );
        assert!(text.contains("chaos_probe_healthy{probe=\"api\",role=\"hypothesis\"} 1\n"), "{text}");
        assert!(
            text.contains("chaos_probe_latency_seconds{probe=\"api\",role=\"hypothesis\"} 0.012000\n"),
            "{text}"
        );
        // Every sample line belongs to a declared family.
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(families.contains(&name), "{line}");
        }
    }

    /// The names keep the rules `promtool check metrics` lints by (checked
    /// with promtool 2.42 too): snake case, HELP for every family, counters
    /// and only counters end in `_total`, no metric type inside a name
    /// (`chaos_attack_counter_total` was refused), base units (`_seconds`).
    #[test]
    fn names_pass_promtools_lint_rules() {
        let m = Metrics::new("x");
        m.attack("a", "net-loss", "/t", true, &counters(1, 1));
        m.probe("p", Role::Abort, &Stats::default());
        let text = m.render();
        let helped: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix("# HELP ")?.split(' ').next()).collect();
        let mut families = 0;
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, kind) = line.split_once(' ').unwrap();
            families += 1;
            assert!(helped.contains(&name), "{name} has no HELP");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{name}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name} is a {kind}");
            for t in ["counter", "gauge", "histogram", "summary", "untyped"] {
                assert!(!name.contains(&format!("_{t}_")) && !name.ends_with(&format!("_{t}")), "{name}");
            }
            for unit in ["_ms", "_millis", "_milliseconds", "_us", "_ns", "_sec", "_secs", "_minutes"] {
                assert!(!name.contains(&format!("{unit}_")) && !name.ends_with(unit), "{name}: base units");
            }
        }
        assert!(families >= 12, "{text}");
    }

    #[test]
    fn serves_over_http() {
        let m = Metrics::new("x");
        m.attack("a", "net-loss", "/t", true, &counters(7, 1));
        let server = serve("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
        let url = HttpUrl::parse(&format!("http://{}/metrics", server.addr)).unwrap();
        let r = request(&url, "GET", &[], None, Instant::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(r.status, 200);
        assert!(String::from_utf8_lossy(&r.body).contains("chaos_attack_matched_total{attack=\"a\"} 7"));
        m.attack("a", "net-loss", "/t", false, &counters(9, 2));
        let r = request(&url, "GET", &[], None, Instant::now() + Duration::from_secs(5)).unwrap();
        assert!(String::from_utf8_lossy(&r.body).contains("chaos_attack_matched_total{attack=\"a\"} 9"));
        let url = HttpUrl::parse(&format!("http://{}/nope", server.addr)).unwrap();
        assert_eq!(
            request(&url, "GET", &[], None, Instant::now() + Duration::from_secs(5)).unwrap().status,
            404
        );
        let taken = serve(server.addr, m).err().unwrap();
        assert!(taken.to_string().contains("cannot listen"), "{taken}");
    }

    /// A scraper that connects and sends nothing must not delay other
    /// scrapers, nor the end of the run (dropping the server), and holds
    /// its connection CONNECTION_DEADLINE at most. Before the server was
    /// concurrent, both waited for the stalled connection's 2 s read
    /// timeout.
    #[test]
    fn a_stalled_scraper_delays_neither_others_nor_shutdown() {
        let server = serve("127.0.0.1:0".parse().unwrap(), Metrics::new("x")).unwrap();
        let url = HttpUrl::parse(&format!("http://{}/metrics", server.addr)).unwrap();
        let mut stalled = TcpStream::connect(server.addr).unwrap();
        // A slow reader too: a request, then never a read.
        let mut slow = TcpStream::connect(server.addr).unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(200)); // both accepted
        let t = Instant::now();
        let r = request(&url, "GET", &[], None, Instant::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(r.status, 200);
        assert!(t.elapsed() < Duration::from_millis(500), "another scraper waited {:?}", t.elapsed());

        // The stalled connection is closed by the server at its deadline.
        stalled.set_read_timeout(Some(CONNECTION_DEADLINE * 3)).unwrap();
        let t = Instant::now();
        let closed = stalled.read(&mut [0u8; 16]);
        assert!(matches!(closed, Ok(0)) || closed.is_err(), "{closed:?}");
        let held = t.elapsed();
        assert!(held < CONNECTION_DEADLINE + Duration::from_millis(500), "held {held:?}");

        // Shutdown with a stalled connection in flight.
        let _stalled = TcpStream::connect(server.addr).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        drop(server);
        assert!(t.elapsed() < Duration::from_millis(200), "shutdown waited {:?}", t.elapsed());
        drop(slow);
    }

    /// More scrapers than MAX_CONNECTIONS at once: the extra ones are
    /// closed, and the endpoint answers again once the others are done.
    #[test]
    fn a_flood_of_connections_is_bounded() {
        let server = serve("127.0.0.1:0".parse().unwrap(), Metrics::new("x")).unwrap();
        let url = HttpUrl::parse(&format!("http://{}/metrics", server.addr)).unwrap();
        let t0 = Instant::now();
        let flood: Vec<TcpStream> =
            (0..MAX_CONNECTIONS + 4).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
        // Closed unanswered at once: the extra ones. Those being served are
        // held until their deadline (2 s after acceptance), past t0 + 1 s.
        let refused = flood
            .iter()
            .filter(|c| {
                let mut c: &TcpStream = c;
                let left = (t0 + Duration::from_secs(1)).saturating_duration_since(Instant::now());
                c.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
                matches!(c.read(&mut [0u8; 1]), Ok(0))
            })
            .count();
        assert_eq!(refused, 4);
        drop(flood);
        let deadline = Instant::now() + Duration::from_secs(5);
        let r = loop {
            match request(&url, "GET", &[], None, deadline) {
                Ok(r) => break r,
                // The flood's threads end as its connections close.
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(r.status, 200);
    }
}
