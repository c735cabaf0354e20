//! Live counters for Prometheus (`--metrics-addr`), so that dashboards can
//! put "chaos was injecting here" next to the symptoms — telling injected
//! failures from cascading ones.
//!
//! The exposition is encoded by `prometheus-client`, the Prometheus
//! project's own Rust library: OpenMetrics for scrapers that ask for it
//! (Prometheus does, in its `Accept` header), the classic text format 0.0.4
//! for everything else (curl, `promtool check metrics`, which parses only
//! that format). The values are a snapshot the runner updates every tick;
//! a collector turns it into constant metrics at each scrape, so a scrape
//! sees one consistent moment and nothing here touches the kernel.
//!
//! The HTTP side stays a thread per connection on std (below): the rest of
//! chaos has no async runtime, and one bounded thread per scraper with a
//! hard deadline for the whole exchange is what keeps a stalled scraper
//! from delaying anyone, which small blocking servers such as tiny_http do
//! not bound (a worker waits on a slow client's reads).

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge, info::Info},
    registry::{Registry, Unit},
};

use crate::{
    counters::Counters,
    error::{Error, Result},
    events::{Progress, RunEvent, Subscriber},
    probes::{Role, Stats},
};

/// What is exported, updated by the runner.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Mutex<State>>,
    registry: Arc<Registry>,
}

#[derive(Debug)]
struct State {
    experiment: String,
    phase: &'static str,
    started: Instant,
    attacks: BTreeMap<String, AttackState>,
    probes: BTreeMap<String, (Role, Stats)>,
}

#[derive(Debug)]
struct AttackState {
    fault: String,
    target: String,
    active: bool,
    counters: Counters,
}

/// The phases of a run, in order.
pub const PHASES: &[&str] = &["plan", "steady-state", "method", "recovery", "done"];

/// The two formats of the exposition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (`text/plain`).
    Text,
}

impl Format {
    /// The format a scraper asks for in its `Accept` header: OpenMetrics
    /// only when it names it, as Prometheus does (the negotiation of
    /// Prometheus' own client libraries).
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

impl Metrics {
    pub fn new(experiment: &str) -> Self {
        let inner = Arc::new(Mutex::new(State {
            experiment: experiment.to_owned(),
            phase: "plan",
            started: Instant::now(),
            attacks: BTreeMap::new(),
            probes: BTreeMap::new(),
        }));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot(inner.clone())));
        Self { inner, registry: Arc::new(registry) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        lock(&self.inner, f)
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

    /// The exposition text in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, nor can the collector.
        let _ = match format {
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &self.registry),
            Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry),
        };
        out
    }
}

/// The metrics follow the run's events (its phase, each attack's final
/// counters) and, between them, its progress (counters climbing, probe
/// statistics).
impl Subscriber for Metrics {
    fn on(&mut self, _: SystemTime, event: &RunEvent) {
        match event {
            RunEvent::Phase { phase } => self.phase(phase.label()),
            RunEvent::Stop(e) | RunEvent::Abort(e) => {
                let a = &e.attack;
                self.attack(&a.attack, &a.fault, &a.target.path, false, &e.counters);
            }
            _ => {}
        }
    }

    fn progress(&mut self, p: &Progress) {
        for a in &p.attacks {
            self.attack(&a.id, &a.fault, &a.target, true, &a.counters);
        }
        for w in &p.probes {
            self.probe(&w.name, w.role, &w.stats);
        }
    }
}

fn lock<T>(state: &Mutex<State>, f: impl FnOnce(&mut State) -> T) -> T {
    f(&mut state.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The collector: the runner's snapshot as constant metrics, at each scrape.
#[derive(Debug)]
struct Snapshot(Arc<Mutex<State>>);

/// A counter family (named without `_total`, which the encoder adds), its
/// help, and how to read it from `T`.
type CounterOf<T> = (&'static str, &'static str, fn(&T) -> u64);

const ATTACK_COUNTERS: [CounterOf<Counters>; 3] = [
    ("chaos_attack_matched", "Events of the target that matched the attack's filters.", |c| c.matched),
    ("chaos_attack_injected", "Events the fault was injected into (packets dropped, ...).", |c| c.injected),
    ("chaos_attack_expired", "Events that found the rule past its kernel-side deadline and passed.", |c| {
        c.expired
    }),
];

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::result::Result<(), std::fmt::Error> {
        lock(&self.0, |s| {
            let exp = s.experiment.as_str();
            // Exposed as `chaos_experiment_info` (an info metric in
            // OpenMetrics, a gauge of 1 in the text format).
            let info = Info::new([("experiment", exp)]);
            info.encode(enc.encode_descriptor(
                "chaos_experiment",
                "The experiment this chaos process runs.",
                None,
                info.metric_type(),
            )?)?;

            let mut f = enc.encode_descriptor(
                "chaos_experiment_phase",
                "1 for the phase the run is in.",
                None,
                MetricType::Gauge,
            )?;
            for p in PHASES {
                let labels = [("experiment", exp), ("phase", p)];
                ConstGauge::new(i64::from(*p == s.phase)).encode(f.encode_family(&labels)?)?;
            }
            let mut f = enc.encode_descriptor(
                "chaos_experiment_elapsed",
                "Time since the run started.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(s.started.elapsed().as_secs_f64())
                .encode(f.encode_family(&[("experiment", exp)])?)?;

            if !s.attacks.is_empty() {
                let mut f = enc.encode_descriptor(
                    "chaos_attack_active",
                    "1 while the attack's fault is in force.",
                    None,
                    MetricType::Gauge,
                )?;
                for (id, a) in &s.attacks {
                    let labels = [("attack", id.as_str()), ("fault", &a.fault), ("target", &a.target)];
                    ConstGauge::new(i64::from(a.active)).encode(f.encode_family(&labels)?)?;
                }
                for (name, help, get) in ATTACK_COUNTERS {
                    let mut f = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
                    for (id, a) in &s.attacks {
                        ConstCounter::new(get(&a.counters))
                            .encode(f.encode_family(&[("attack", id.as_str())])?)?;
                    }
                }
            }
            // Not `chaos_attack_counter`: promtool's lint refuses a metric
            // type inside a metric name.
            if s.attacks.values().any(|a| !a.counters.detail.is_empty()) {
                let mut f = enc.encode_descriptor(
                    "chaos_attack_events",
                    "Fault-specific event counts, by event (egress_dropped, ...).",
                    None,
                    MetricType::Counter,
                )?;
                for (id, a) in &s.attacks {
                    for (k, v) in &a.counters.detail {
                        ConstCounter::new(*v)
                            .encode(f.encode_family(&[("attack", id.as_str()), ("event", k)])?)?;
                    }
                }
            }

            if !s.probes.is_empty() {
                let role = |r: &Role| match r {
                    Role::Hypothesis => "hypothesis",
                    Role::Abort => "abort",
                };
                let mut f = enc.encode_descriptor(
                    "chaos_probe_healthy",
                    "1 while the probe is within its tolerance.",
                    None,
                    MetricType::Gauge,
                )?;
                for (name, (r, st)) in &s.probes {
                    let labels = [("probe", name.as_str()), ("role", role(r))];
                    ConstGauge::new(i64::from(st.healthy)).encode(f.encode_family(&labels)?)?;
                }
                let probe_counters: [CounterOf<Stats>; 2] = [
                    ("chaos_probe_checks", "Checks the probe ran.", |st| st.checks),
                    ("chaos_probe_failures", "Checks that failed.", |st| st.failed),
                ];
                for (fname, help, get) in probe_counters {
                    let mut f = enc.encode_descriptor(fname, help, None, MetricType::Counter)?;
                    for (name, (r, st)) in &s.probes {
                        let labels = [("probe", name.as_str()), ("role", role(r))];
                        ConstCounter::new(get(st)).encode(f.encode_family(&labels)?)?;
                    }
                }
                let mut f = enc.encode_descriptor(
                    "chaos_probe_latency",
                    "Latency of the last check (NaN before the first).",
                    Some(&Unit::Seconds),
                    MetricType::Gauge,
                )?;
                for (name, (r, st)) in &s.probes {
                    let labels = [("probe", name.as_str()), ("role", role(r))];
                    let v = st.last.as_ref().map_or(f64::NAN, |l| l.latency.as_secs_f64());
                    ConstGauge::new(v).encode(f.encode_family(&labels)?)?;
                }
            }
            Ok(())
        })
    }
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

/// The largest request head read; a scraper's is a few hundred bytes.
const MAX_REQUEST: usize = 8192;

/// What a request asks for: the path and the `Accept` header, or why the
/// request is refused (parsed by `httparse`, hyper's request parser).
fn parse_request(buf: &[u8]) -> std::result::Result<Option<(String, Option<String>)>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => return Ok(None),
        Ok(httparse::Status::Partial) => return Err("request head too large"),
        Err(_) => return Err("malformed request"),
    }
    if !matches!(req.method, Some("GET" | "HEAD")) {
        return Err("only GET is served");
    }
    let path = req.path.unwrap_or("/");
    let accept = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("accept"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    Ok(Some((path.split('?').next().unwrap_or("/").to_owned(), accept)))
}

fn answer(mut conn: TcpStream, metrics: &Metrics, deadline: Instant) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let request = loop {
        conn.set_read_timeout(Some(left(deadline)?))?;
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(()); // closed before a whole request: nothing to answer
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(r) = parse_request(&buf).transpose() {
            break r;
        }
    };
    let (status, kind, body) = match request {
        Ok((path, accept)) => match path.as_str() {
            "/metrics" => {
                let format = Format::from_accept(accept.as_deref());
                ("200 OK", format.content_type(), metrics.render(format))
            }
            "/" => ("200 OK", "text/plain; charset=utf-8", "chaos: counters at /metrics\n".to_owned()),
            _ => ("404 Not Found", "text/plain; charset=utf-8", "not found; try /metrics\n".to_owned()),
        },
        Err(why) => ("400 Bad Request", "text/plain; charset=utf-8", format!("{why}\n")),
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
    use crate::probes::Sample;

    /// A scrape over a plain TCP connection (the HTTP probe is not used, so
    /// that these tests depend on nothing but the server): status line,
    /// `Content-Type`, body.
    fn scrape(
        addr: SocketAddr,
        path: &str,
        accept: Option<&str>,
    ) -> std::io::Result<(String, String, String)> {
        let mut c = TcpStream::connect(addr)?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n{accept}\r\n")?;
        let mut raw = String::new();
        c.read_to_string(&mut raw)?;
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.lines().next().unwrap_or("").to_owned();
        let kind = head.lines().find_map(|l| l.strip_prefix("Content-Type: ")).unwrap_or("").to_owned();
        Ok((status, kind, body.to_owned()))
    }

    /// `promtool check metrics` on `text`: None if promtool is not
    /// installed (outside CI only), else its verdict and output.
    fn promtool(text: &str) -> Option<(bool, String)> {
        let child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = match child {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::env::var_os("CI").is_none() => {
                return None;
            }
            r => r.expect("promtool (Debian package prometheus; scripts/setup.sh installs it)"),
        };
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let said =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Some((out.status.success(), said))
    }

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
        let text = m.render(Format::Text);
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
            text.contains("chaos_probe_latency_seconds{probe=\"api\",role=\"hypothesis\"} 0.012\n"),
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

    /// The metrics are a subscriber: the phase and an attack's final
    /// counters come from the events, the counters in between from the
    /// progress snapshots.
    #[test]
    fn follows_the_run_events_and_progress() {
        use crate::events::{AttackFields, AttackProgress, Ending, Events, Phase, Progress, TargetFields};
        let m = Metrics::new("e");
        let bus = Events::default();
        bus.subscribe(Box::new(m.clone()));
        bus.emit(RunEvent::Phase { phase: Phase::Method });
        let running = AttackProgress {
            id: "a".into(),
            fault: "net-loss".into(),
            target: "/t".into(),
            done: Duration::from_secs(1),
            duration: Duration::from_secs(2),
            counters: counters(10, 4),
        };
        bus.progress(&Progress { attacks: vec![running], ..Default::default() });
        let text = m.render(Format::Text);
        assert!(text.contains("phase=\"method\"} 1\n"), "{text}");
        assert!(text.contains("chaos_attack_injected_total{attack=\"a\"} 4\n"), "{text}");
        assert!(text.contains("chaos_attack_active{attack=\"a\",fault=\"net-loss\",target=\"/t\"} 1\n"));
        let attack = AttackFields {
            attack: "a".into(),
            fault: "net-loss".into(),
            target: TargetFields { path: "/t".into(), id: 7, level: 1, workload: None },
            duration: "2s".into(),
            interfaces: None,
            parameters: Default::default(),
        };
        bus.emit(RunEvent::Stop(Ending {
            attack,
            reason: "deadline".into(),
            counters: counters(12, 6),
            inert_after_us: 1,
            detached_after_us: 2,
        }));
        bus.emit(RunEvent::Phase { phase: Phase::Recovery });
        let text = m.render(Format::Text);
        assert!(text.contains("phase=\"recovery\"} 1\n") && text.contains("phase=\"method\"} 0\n"), "{text}");
        assert!(text.contains("chaos_attack_injected_total{attack=\"a\"} 6\n"), "{text}");
        assert!(text.contains("chaos_attack_active{attack=\"a\",fault=\"net-loss\",target=\"/t\"} 0\n"));
    }

    /// A run's worth of everything: an attack with detail counters, a
    /// probe of each role, one without a check yet.
    fn busy() -> Metrics {
        let m = Metrics::new("x \"quoted\"\nline");
        m.phase("method");
        m.attack("a", "net-loss", "/t", true, &counters(1, 1));
        let mut stats = Stats::default();
        stats.checks = 2;
        stats.last = Some(Sample::pass(Duration::from_millis(3), "200".into()));
        m.probe("p", Role::Hypothesis, &stats);
        m.probe("q", Role::Abort, &Stats::default());
        m
    }

    /// The names keep the rules `promtool check metrics` lints by, checked
    /// here without promtool too: snake case, HELP for every family,
    /// counters and only counters end in `_total`, no metric type inside a
    /// name (`chaos_attack_counter_total` was refused), base units.
    #[test]
    fn names_pass_promtools_lint_rules() {
        let text = busy().render(Format::Text);
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
        assert_eq!(families, 12, "{text}");
    }

    /// The real linter on the text format, for a busy exposition and for
    /// the first scrape of a run (no attack, no probe yet). promtool reads
    /// only this format (it has no OpenMetrics parser), which is why the
    /// server offers it to every scraper that does not ask for OpenMetrics.
    #[test]
    fn promtool_check_metrics_passes() {
        for m in [busy(), Metrics::new("x")] {
            let text = m.render(Format::Text);
            let Some((ok, said)) = promtool(&text) else {
                eprintln!("promtool is not installed (Debian package prometheus): not run");
                return;
            };
            assert!(ok && said.trim().is_empty(), "promtool check metrics:\n{said}\non:\n{text}");
        }
        // promtool fails what it should: a counter without `_total`.
        let (ok, said) = promtool("# HELP x_count_seconds_total Help.\n# TYPE x_count_seconds_total gauge\nx_count_seconds_total 1\n").unwrap();
        assert!(!ok && said.contains("x_count_seconds_total"), "{said}");
    }

    /// OpenMetrics for those who ask: counter families named without
    /// `_total`, samples with it, the unit declared, the closing `# EOF`.
    #[test]
    fn openmetrics_when_asked() {
        let text = busy().render(Format::OpenMetrics);
        assert!(
            text.contains(
                "# TYPE chaos_attack_matched counter\nchaos_attack_matched_total{attack=\"a\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE chaos_experiment info\n"), "{text}");
        assert!(text.contains("# UNIT chaos_probe_latency_seconds seconds\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
        assert_eq!(Format::from_accept(None), Format::Text);
    }

    #[test]
    fn serves_over_http() {
        let m = Metrics::new("x");
        m.attack("a", "net-loss", "/t", true, &counters(7, 1));
        let server = serve("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
        let (status, kind, body) = scrape(server.addr, "/metrics", None).unwrap();
        assert_eq!(
            (status.as_str(), kind.as_str()),
            ("HTTP/1.1 200 OK", "text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(body.contains("chaos_attack_matched_total{attack=\"a\"} 7\n"), "{body}");
        m.attack("a", "net-loss", "/t", false, &counters(9, 2));
        let (_, _, body) = scrape(server.addr, "/metrics?x=1", None).unwrap();
        assert!(body.contains("chaos_attack_matched_total{attack=\"a\"} 9\n"), "{body}");
        // What Prometheus sends.
        let accept = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2";
        let (status, kind, body) = scrape(server.addr, "/metrics", Some(accept)).unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(kind.starts_with("application/openmetrics-text; version=1.0.0"), "{kind}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(scrape(server.addr, "/nope", None).unwrap().0.contains(" 404 "));
        // Not HTTP at all: refused with 400, nothing else.
        let mut c = TcpStream::connect(server.addr).unwrap();
        c.write_all(b"\x00\x01 garbage\r\n\r\n").unwrap();
        let mut raw = String::new();
        c.read_to_string(&mut raw).unwrap();
        assert!(raw.starts_with("HTTP/1.1 400 "), "{raw}");
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
        let mut stalled = TcpStream::connect(server.addr).unwrap();
        // A slow reader too: a request, then never a read.
        let mut slow = TcpStream::connect(server.addr).unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(200)); // both accepted
        let t = Instant::now();
        assert!(scrape(server.addr, "/metrics", None).unwrap().0.contains(" 200 "));
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
        let status = loop {
            match scrape(server.addr, "/metrics", None) {
                Ok((status, _, _)) if !status.is_empty() => break status,
                // The flood's threads end as its connections close.
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                r => panic!("{r:?}"),
            }
        };
        assert!(status.contains(" 200 "), "{status}");
    }
}
