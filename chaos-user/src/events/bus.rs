//! The bus: emitters hand each event to it once; it stamps the time and
//! passes it to every subscriber in turn, under one lock, so that every
//! subscriber sees the same events in the same order (probe threads emit
//! too).

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use super::{JsonLines, RunEvent};
use crate::{
    counters::Counters,
    probes::{Role, Stats},
};

/// What consumes the stream: the JSON lines, the metrics, the live view.
pub trait Subscriber: Send {
    /// One event, emitted at `at`.
    fn on(&mut self, at: SystemTime, event: &RunEvent);

    /// The state between events, every tick of a run (counters climbing,
    /// probe statistics): for gauges and views. Not part of the stream.
    fn progress(&mut self, _progress: &Progress) {}
}

/// The snapshot the runner takes every tick.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// e.g. ``step 2/3 `partition` ``.
    pub phase: String,
    pub elapsed: Duration,
    pub attacks: Vec<AttackProgress>,
    pub probes: Vec<ProbeProgress>,
}

#[derive(Clone, Debug)]
pub struct AttackProgress {
    pub id: String,
    pub fault: String,
    pub target: String,
    /// How long it has run, at most its duration.
    pub done: Duration,
    pub duration: Duration,
    pub counters: Counters,
}

#[derive(Clone, Debug)]
pub struct ProbeProgress {
    pub name: String,
    pub role: Role,
    /// Consecutive failures that make it unhealthy.
    pub failures: u32,
    pub stats: Stats,
}

/// A handle on the bus; clones share it.
#[derive(Clone, Default)]
pub struct Events {
    subscribers: Arc<Mutex<Vec<Box<dyn Subscriber>>>>,
}

impl Events {
    /// A bus with one subscriber, JSON lines to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        let bus = Self::default();
        bus.subscribe(Box::new(JsonLines::new(out)));
        bus
    }

    pub fn subscribe(&self, s: Box<dyn Subscriber>) {
        self.with(|subs| subs.push(s));
    }

    pub fn emit(&self, event: RunEvent) {
        self.clone().on(SystemTime::now(), &event);
    }

    pub fn progress(&self, progress: &Progress) {
        self.with(|subs| subs.iter_mut().for_each(|s| s.progress(progress)));
    }

    fn with<T>(&self, f: impl FnOnce(&mut Vec<Box<dyn Subscriber>>) -> T) -> T {
        // A subscriber that panicked mid-event leaves nothing half-written
        // that matters more than the events after it.
        f(&mut self.subscribers.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A bus subscribes to another as one subscriber: `chaos run` gives its
/// own bus (metrics, live view) the caller's (JSON lines), keeping the time
/// each event was stamped with.
impl Subscriber for Events {
    fn on(&mut self, at: SystemTime, event: &RunEvent) {
        self.with(|subs| subs.iter_mut().for_each(|s| s.on(at, event)));
    }

    fn progress(&mut self, progress: &Progress) {
        Events::progress(self, progress);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Names(Arc<Mutex<Vec<String>>>);
    impl Subscriber for Names {
        fn on(&mut self, _: SystemTime, e: &RunEvent) {
            let v = serde_json::to_value(e).unwrap();
            self.0.lock().unwrap().push(v["event"].as_str().unwrap().to_owned());
        }
    }

    #[test]
    fn every_subscriber_sees_every_event_once_in_order() {
        let bus = Events::default();
        let (a, b) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        bus.subscribe(Box::new(Names(a.clone())));
        bus.clone().subscribe(Box::new(Names(b.clone())));
        bus.emit(RunEvent::Phase { phase: super::super::Phase::Method });
        bus.emit(RunEvent::Recovery { recovered: true, after_ms: Some(3), detail: String::new() });
        let want = vec!["phase".to_owned(), "recovery".to_owned()];
        assert_eq!(*a.lock().unwrap(), want);
        assert_eq!(*b.lock().unwrap(), want);
    }
}
