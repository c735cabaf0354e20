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
        atomic::{AtomicBool, Ordering},
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
            family(
                &mut out,
                "chaos_attack_counter_total",
                "counter",
                "Fault-specific counters (egress_dropped, ...).",
            );
            for (id, a) in &s.attacks {
                for (k, v) in &a.counters.detail {
                    let _ = writeln!(
                        out,
                        "chaos_attack_counter_total{{attack=\"{}\",counter=\"{k}\"}} {v}",
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

/// The HTTP endpoint; stops when dropped.
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
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new().name("metrics".into()).spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((conn, _)) => {
                    let _ = answer(conn, &metrics);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })?;
    Ok(Server { addr, stop, thread: Some(thread) })
}

fn answer(mut conn: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
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
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
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
            text.contains("chaos_attack_counter_total{attack=\"net-loss-1\",counter=\"egress_dropped\"} 5\n")
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
}
