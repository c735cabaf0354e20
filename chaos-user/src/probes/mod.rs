//! Probes: health checks of the system under attack — HTTP, TCP connect,
//! a command, a Prometheus query — each with a tolerance (what counts as
//! healthy), an interval, a timeout, and how many consecutive failures
//! make it unhealthy.
//!
//! [`Monitor`] runs probes continuously, one thread each, and records what
//! they see; the experiment runner reads that every tick and aborts when a
//! probe turns unhealthy. A probe may run inside a network namespace
//! (`netns:`), to reach a service from where its clients are.

pub mod command;
pub mod http;
pub mod prometheus;
pub mod tcp;

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::Serialize;

pub use self::{command::CommandCheck, http::HttpCheck, prometheus::PrometheusCheck, tcp::TcpCheck};
use crate::{
    events::{Events, RunEvent},
    timebase::monotonic_ns,
    units::format_duration,
};

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub ok: bool,
    pub latency: Duration,
    /// What was seen: `200 in 12ms`, `timed out connecting to ...`.
    pub detail: String,
}

impl Sample {
    pub fn pass(latency: Duration, detail: String) -> Self {
        Self { ok: true, latency, detail }
    }

    pub fn fail(latency: Duration, detail: String) -> Self {
        Self { ok: false, latency, detail }
    }
}

/// What a probe checks.
#[derive(Clone, Debug)]
pub enum Check {
    Http(HttpCheck),
    Tcp(TcpCheck),
    Command(CommandCheck),
    Prometheus(PrometheusCheck),
}

impl Check {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http(_) => "http",
            Self::Tcp(_) => "tcp",
            Self::Command(_) => "command",
            Self::Prometheus(_) => "prometheus",
        }
    }

    /// One line saying what is checked and what counts as healthy.
    pub fn describe(&self) -> String {
        match self {
            Self::Http(h) => {
                let mut s = format!("{} {} -> status {}", h.method, h.url, h.status);
                if let Some(l) = h.max_latency {
                    s += &format!(", within {}", format_duration(l));
                }
                if let Some(b) = &h.body_contains {
                    s += &format!(", body contains {b:?}");
                }
                if let Some(r) = &h.body_matches {
                    s += &format!(", body matches /{r}/");
                }
                if let Some(ca) = &h.client.ca_file {
                    s += &format!(", trusting {}", ca.display());
                }
                s
            }
            Self::Tcp(t) => match t.max_latency {
                Some(l) => format!("connect to {} within {}", t.address, format_duration(l)),
                None => format!("connect to {}", t.address),
            },
            Self::Command(c) => {
                let mut s = format!("`{}` exits {}", c.display(), c.exit_code);
                if let Some(b) = &c.output_contains {
                    s += &format!(", output contains {b:?}");
                }
                if let Some(r) = &c.output_matches {
                    s += &format!(", output matches /{r}/");
                }
                s
            }
            Self::Prometheus(p) => format!("{} on {}: {}", p.query, p.server, p.threshold()),
        }
    }

    /// Run the check once, bounded by `timeout`.
    pub fn run(&self, timeout: Duration) -> Sample {
        match self {
            Self::Http(c) => c.run(timeout),
            Self::Tcp(c) => c.run(timeout),
            Self::Command(c) => c.run(timeout),
            Self::Prometheus(c) => c.run(timeout),
        }
    }
}

/// A configured probe.
#[derive(Clone, Debug)]
pub struct Probe {
    pub name: String,
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failed checks that make the probe unhealthy.
    pub failures: u32,
    /// Run inside this network namespace: a name under /run/netns or a
    /// path such as /proc/PID/ns/net.
    pub netns: Option<String>,
}

impl Probe {
    pub fn netns_path(&self) -> Option<PathBuf> {
        self.netns
            .as_ref()
            .map(|n| if n.starts_with('/') { PathBuf::from(n) } else { PathBuf::from("/run/netns").join(n) })
    }

    /// Check that the network namespace (if any) can be entered.
    pub fn check_netns(&self) -> Result<(), String> {
        match self.netns_path() {
            None => Ok(()),
            Some(p) => File::open(&p).map(drop).map_err(|e| {
                format!(
                    "probe `{}`: network namespace {} cannot be opened ({e}); `ip netns list` shows the named ones",
                    self.name,
                    p.display()
                )
            }),
        }
    }

    /// Check what the probe needs from this machine before anything is
    /// injected: its network namespace, its `ca-file`.
    pub fn check_environment(&self) -> Result<(), String> {
        self.check_netns()?;
        if let Check::Http(h) = &self.check
            && let Some(ca) = &h.client.ca_file
        {
            http::check_ca_file(ca).map_err(|e| format!("probe `{}`: {e}", self.name))?;
        }
        Ok(())
    }

    /// Move the calling thread into the probe's network namespace.
    fn enter_netns(&self) -> Result<(), String> {
        let Some(path) = self.netns_path() else { return Ok(()) };
        let f = File::open(&path)
            .map_err(|e| format!("cannot open network namespace {}: {e}", path.display()))?;
        // SAFETY: setns on an fd we own; it changes this thread only.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "cannot enter network namespace {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Run the check once, in the probe's namespace, on a thread of its own.
    pub fn run_once(&self) -> Sample {
        let probe = self.clone();
        std::thread::scope(|s| {
            s.spawn(move || match probe.enter_netns() {
                Ok(()) => probe.check.run(probe.timeout),
                Err(e) => Sample::fail(Duration::ZERO, e),
            })
            .join()
            .unwrap_or_else(|_| Sample::fail(Duration::ZERO, "the probe panicked".into()))
        })
    }
}

/// Run `probes` once each, in parallel.
pub fn run_all_once(probes: &[&Probe]) -> Vec<Sample> {
    std::thread::scope(|s| {
        let handles: Vec<_> = probes.iter().map(|p| s.spawn(|| p.run_once())).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Sample::fail(Duration::ZERO, "panicked".into())))
            .collect()
    })
}

/// Why a probe is watched: the hypothesis, or an abort condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Hypothesis,
    Abort,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Self::Hypothesis => "hypothesis",
            Self::Abort => "abort condition",
        }
    }
}

/// When and why a probe turned unhealthy.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// CLOCK_MONOTONIC when the check that crossed the threshold ended.
    pub at_monotonic_ns: u64,
    pub detail: String,
}

/// What a watched probe has seen so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub checks: u64,
    pub failed: u64,
    pub consecutive_failures: u32,
    pub max_consecutive_failures: u32,
    pub healthy: bool,
    /// The first time it turned unhealthy.
    pub violation: Option<Violation>,
    #[serde(skip)]
    pub last: Option<Sample>,
    pub last_detail: String,
    pub latency_ms_min: Option<f64>,
    pub latency_ms_max: Option<f64>,
    #[serde(skip)]
    latency_ms_sum: f64,
    /// Set by [`Watched::mark`]: passing checks that started after it.
    #[serde(skip)]
    mark: Option<Instant>,
    #[serde(skip)]
    pub first_ok_after_mark: Option<Instant>,
}

impl Stats {
    pub fn latency_ms_avg(&self) -> Option<f64> {
        (self.checks > 0).then(|| self.latency_ms_sum / self.checks as f64)
    }
}

/// A probe under watch, shared between its thread and the runner.
pub struct Watched {
    pub probe: Probe,
    pub role: Role,
    stats: Mutex<Stats>,
}

impl Watched {
    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// From now on, note the first passing check that starts after `at`.
    pub fn mark(&self, at: Instant) {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        s.mark = Some(at);
        s.first_ok_after_mark = None;
    }

    /// Record a check; true when it made the probe unhealthy.
    fn record(&self, started: Instant, sample: Sample) -> Transition {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let was_healthy = s.healthy || s.checks == 0;
        s.checks += 1;
        let ms = sample.latency.as_secs_f64() * 1000.0;
        s.latency_ms_sum += ms;
        s.latency_ms_min = Some(s.latency_ms_min.map_or(ms, |m| m.min(ms)));
        s.latency_ms_max = Some(s.latency_ms_max.map_or(ms, |m| m.max(ms)));
        if sample.ok {
            s.consecutive_failures = 0;
            if s.mark.is_some_and(|m| started >= m) && s.first_ok_after_mark.is_none() {
                s.first_ok_after_mark = Some(Instant::now());
            }
        } else {
            s.failed += 1;
            s.consecutive_failures += 1;
            s.max_consecutive_failures = s.max_consecutive_failures.max(s.consecutive_failures);
        }
        s.healthy = s.consecutive_failures < self.probe.failures;
        s.last_detail = sample.detail.clone();
        let transition = match (was_healthy, s.healthy) {
            (true, false) => {
                if s.violation.is_none() {
                    s.violation =
                        Some(Violation { at_monotonic_ns: monotonic_ns(), detail: sample.detail.clone() });
                }
                Transition::Unhealthy
            }
            (false, true) => Transition::Healthy,
            _ => Transition::None,
        };
        s.last = Some(sample);
        transition
    }
}

#[derive(PartialEq, Eq)]
enum Transition {
    None,
    Unhealthy,
    Healthy,
}

/// Probes running continuously, one thread each.
pub struct Monitor {
    pub watched: Vec<Arc<Watched>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Called when a probe turns unhealthy, to wake the runner at once.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

impl Monitor {
    /// Start watching. Each probe checks at once, then every `interval`.
    pub fn start(probes: Vec<(Probe, Role)>, events: Events, wake: Wake) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut watched = Vec::new();
        let mut threads = Vec::new();
        for (probe, role) in probes {
            let w = Arc::new(Watched {
                probe,
                role,
                stats: Mutex::new(Stats { healthy: true, ..Default::default() }),
            });
            watched.push(w.clone());
            let (stop, events, wake) = (stop.clone(), events.clone(), wake.clone());
            let name = format!("probe-{}", w.probe.name);
            let spawned =
                std::thread::Builder::new().name(name).spawn(move || watch(&w, &stop, &events, &wake));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => tracing::error!("cannot start a probe thread: {e}"),
            }
        }
        Self { watched, stop, threads }
    }

    /// Stop the threads. A check in flight finishes on its own (within its
    /// timeout) without holding up the caller.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.thread().unpark();
        }
    }

    /// The first unhealthy probe of `role`, if any.
    pub fn unhealthy(&self, role: Role) -> Option<(&Watched, Stats)> {
        self.watched.iter().filter(|w| w.role == role).find_map(|w| {
            let s = w.stats();
            (!s.healthy).then_some((w.as_ref(), s))
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn watch(w: &Watched, stop: &AtomicBool, events: &Events, wake: &Wake) {
    let entered = w.probe.enter_netns();
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let sample = match &entered {
            Ok(()) => w.probe.check.run(w.probe.timeout),
            Err(e) => Sample::fail(Duration::ZERO, e.clone()),
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let detail = sample.detail.clone();
        match w.record(started, sample) {
            Transition::Unhealthy => {
                wake();
                events.emit(RunEvent::ProbeUnhealthy {
                    probe: w.probe.name.clone(),
                    role: w.role,
                    detail,
                    failures: w.probe.failures,
                });
            }
            Transition::Healthy => {
                events.emit(RunEvent::ProbeHealthy { probe: w.probe.name.clone(), role: w.role, detail });
            }
            Transition::None => {}
        }
        let next = started + w.probe.interval;
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= next {
                break;
            }
            std::thread::park_timeout(next - now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn tcp_probe(address: String, failures: u32) -> Probe {
        Probe {
            name: "db".into(),
            check: Check::Tcp(TcpCheck { address, max_latency: None }),
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(200),
            failures,
            netns: None,
        }
    }

    #[test]
    fn turns_unhealthy_after_consecutive_failures_and_wakes() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let woken = Arc::new(AtomicBool::new(false));
        let w2 = woken.clone();
        let events = Events::new(Box::new(std::io::sink()));
        let mut m = Monitor::start(
            vec![(tcp_probe(addr, 3), Role::Hypothesis)],
            events,
            Arc::new(move || w2.store(true, Ordering::SeqCst)),
        );
        std::thread::sleep(Duration::from_millis(150));
        assert!(m.unhealthy(Role::Hypothesis).is_none());
        assert!(m.watched[0].stats().checks >= 3);
        drop(l); // now every connect is refused
        let t = Instant::now();
        while m.unhealthy(Role::Hypothesis).is_none() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (_, stats) = m.unhealthy(Role::Hypothesis).expect("unhealthy");
        assert!(woken.load(Ordering::SeqCst));
        assert_eq!(stats.consecutive_failures, 3);
        assert!(stats.violation.unwrap().detail.contains("refused"));
        assert!(m.unhealthy(Role::Abort).is_none());
        m.stop();
    }

    #[test]
    fn mark_finds_the_first_pass_after_it() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let probe = tcp_probe(l.local_addr().unwrap().to_string(), 1);
        let m = Monitor::start(
            vec![(probe, Role::Hypothesis)],
            Events::new(Box::new(std::io::sink())),
            Arc::new(|| {}),
        );
        let mark = Instant::now();
        m.watched[0].mark(mark);
        let t = Instant::now();
        while m.watched[0].stats().first_ok_after_mark.is_none() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(m.watched[0].stats().first_ok_after_mark.unwrap() >= mark);
    }

    #[test]
    fn missing_netns_is_a_failed_check() {
        let mut p = tcp_probe("127.0.0.1:1".into(), 1);
        p.netns = Some("chaos-no-such-netns".into());
        assert!(p.check_netns().unwrap_err().contains("/run/netns/chaos-no-such-netns"));
        let s = p.run_once();
        assert!(!s.ok && s.detail.contains("network namespace"), "{s:?}");
    }

    #[test]
    fn descriptions() {
        let p = tcp_probe("db:5432".into(), 1);
        assert_eq!(p.check.describe(), "connect to db:5432");
        assert_eq!(p.check.kind(), "tcp");
    }
}
