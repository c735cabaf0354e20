//! The published JSON Schema of an event line, generated from the types
//! (so it cannot describe fields the code does not write) and committed as
//! `docs/events.schema.json` (so a consumer can read it, and a change to
//! the stream shows in review as a change to that file).

use super::Line;

/// Where the schema is committed, from the repository root.
pub const PATH: &str = "docs/events.schema.json";

/// The schema, as committed: pretty JSON and a final newline.
pub fn generate() -> String {
    let schema = schemars::schema_for!(Line<'static>);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::{
        path::PathBuf,
        sync::{Arc, Mutex, atomic::AtomicBool},
        time::{Duration, Instant},
    };

    use serde_json::Value;

    use super::*;
    use crate::{
        attack::Attack,
        counters::Counters,
        events::{Events, RunEvent},
        injector::Stopped,
        probes::{Check, Monitor, Probe, Role, TcpCheck},
        report::AbortRecord,
        targets::Target,
    };

    fn committed_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(PATH)
    }

    #[test]
    fn committed_schema_is_the_generated_one() {
        let generated = generate();
        let path = committed_path();
        if std::env::var_os("CHAOS_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{PATH} differs from the schema the event types generate: the event stream changed. \
             If the change is meant, regenerate it with `CHAOS_BLESS=1 cargo test -p chaos-user \
             committed_schema` and commit it (consumers read that file)."
        );
    }

    /// Lines written to a buffer the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn validate(text: &str) -> Vec<Value> {
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(committed_path()).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).expect("the committed schema is a valid schema");
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
                let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{l}\ndoes not match {PATH}: {errors:?}");
                v
            })
            .collect()
    }

    /// An attack built the way `chaos run` builds one: its fault parsed
    /// from an experiment file.
    fn attack() -> Attack {
        let yaml = "name: s\ntargets:\n  app: {cgroup: /x}\nhypothesis:\n  probes:\n    - name: p\n      command: {run: [\"true\"]}\nmethod:\n  - \
                    fault: net-loss\n    percent: 30\n    port: 5432\n    duration: 2s\n";
        let exp = crate::experiment::parse("s.yaml", yaml, &[]).expect("a valid experiment");
        let a = exp.attacks().next().unwrap();
        Attack {
            id: a.id.clone(),
            fault: a.fault.clone(),
            target: Target { path: "/sys/fs/cgroup/x".into(), id: 42, level: 1, workload: None },
            duration: a.duration,
        }
    }

    /// Events produced by the real emitters (the probe monitor's threads,
    /// the constructors the controller uses) validate against the
    /// committed schema, and keep the field names consumers read.
    #[test]
    fn real_events_match_the_committed_schema() {
        let buf = Buffer::default();
        let events = Events::new(Box::new(buf.clone()));

        // A probe against a port nothing listens on turns unhealthy, then
        // healthy once something does: two events from the monitor thread.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let probe = Probe {
            name: "db".into(),
            check: Check::Tcp(TcpCheck { address: addr.to_string(), max_latency: None }),
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(200),
            failures: 2,
            netns: None,
        };
        let woken = Arc::new(AtomicBool::new(false));
        let w = woken.clone();
        let mut monitor = Monitor::start(
            vec![(probe, Role::Hypothesis)],
            events.clone(),
            Arc::new(move || w.store(true, std::sync::atomic::Ordering::SeqCst)),
        );
        let said = |name: &str| String::from_utf8_lossy(&buf.0.lock().unwrap()).contains(name);
        let until = Instant::now() + Duration::from_secs(10);
        while !said("probe-unhealthy") && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _l = std::net::TcpListener::bind(addr).unwrap();
        while !said("probe-healthy") && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        monitor.stop();

        let a = attack();
        let counters = Counters { matched: 10, injected: 3, ..Default::default() };
        for reason in ["deadline", "SIGINT"] {
            let stopped = Stopped {
                attack: a.clone(),
                counters: counters.clone(),
                inert_after: Duration::from_micros(12),
                detached_after: Duration::from_micros(340),
            };
            events.emit(RunEvent::end(&stopped, reason.into()));
        }
        events.emit(RunEvent::ExperimentAbort(AbortRecord {
            cause: "signal".into(),
            probe: None,
            detail: "SIGINT received".into(),
            decided_monotonic_ns: 1,
            inert_after_decision_us: Some(20),
            detached_after_decision_us: None,
        }));
        events.emit(RunEvent::Recovery { recovered: false, after_ms: None, detail: "not recovered".into() });

        let lines = validate(&String::from_utf8_lossy(&buf.0.lock().unwrap()));
        let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["probe-unhealthy", "probe-healthy", "stop", "abort", "experiment-abort", "recovery"]
        );
        assert!(lines.iter().all(|l| l["time"].as_str().is_some_and(|t| t.ends_with('Z'))), "{lines:?}");
        assert_eq!(lines[0]["probe"], "db");
        assert_eq!(lines[0]["role"], "hypothesis");
        assert_eq!(lines[0]["failures"], 2);
        let stop = &lines[2];
        assert_eq!(stop["attack"], "net-loss-1", "{stop}");
        assert_eq!(stop["fault"], "net-loss");
        assert_eq!(stop["percent"], 30.0, "the fault's parameters are top-level fields: {stop}");
        assert_eq!(stop["target"]["path"], "/sys/fs/cgroup/x");
        assert_eq!(stop["counters"]["injected"], 3);
        assert_eq!(stop["reason"], "deadline");
        assert_eq!(lines[3]["reason"], "SIGINT");
        assert_eq!(lines[4]["cause"], "signal");
        assert!(woken.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn a_line_that_breaks_the_schema_is_caught() {
        // The validation above is not vacuous: a misspelt event fails it.
        let schema: Value = serde_json::from_str(&generate()).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let good = serde_json::json!({"time": "2026-01-01T00:00:00Z", "event": "phase", "phase": "method"});
        assert!(validator.is_valid(&good));
        for bad in [
            serde_json::json!({"time": "2026-01-01T00:00:00Z", "event": "phase", "phase": "lunch"}),
            serde_json::json!({"time": "2026-01-01T00:00:00Z", "event": "stopp"}),
            serde_json::json!({"event": "phase", "phase": "method"}),
        ] {
            assert!(!validator.is_valid(&bad), "{bad}");
        }
    }
}
