//! Structured events: one JSON object per line, for every start, stop and
//! abort, naming what was injected where — so that on-call can tell an
//! injected failure from a cascading one.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde_json::{Value, json};

use crate::{
    attack::Attack,
    injector::{Running, Stopped},
    timebase::rfc3339,
};

/// Where event lines go (stdout by default; a file with `--events`).
#[derive(Clone)]
pub struct Events {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Events {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out: Arc::new(Mutex::new(out)) }
    }

    pub fn stdout() -> Self {
        Self::new(Box::new(std::io::stdout()))
    }

    /// Write one event: `{"time": ..., "event": kind, ...fields}`.
    pub fn emit(&self, kind: &str, fields: Value) {
        let mut obj = json!({ "time": rfc3339(SystemTime::now()), "event": kind });
        if let (Value::Object(o), Value::Object(f)) = (&mut obj, fields) {
            o.extend(f);
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{obj}");
        let _ = out.flush();
    }

    pub fn start(&self, running: &Running) {
        let mut fields = attack_fields(&running.attack);
        fields["mechanism"] = json!(running.mechanism);
        fields["interfaces"] = json!(running.interfaces());
        fields["deadline_monotonic_ns"] = json!(running.deadline_ns);
        self.emit("start", fields);
    }

    /// `stop` when the attack reached its deadline, `abort` otherwise.
    pub fn end(&self, stopped: &Stopped, reason: &str) {
        let mut fields = attack_fields(&stopped.attack);
        fields["reason"] = json!(reason);
        fields["counters"] = json!(stopped.counters);
        fields["inert_after_us"] = json!(stopped.inert_after.as_micros() as u64);
        fields["detached_after_us"] = json!(stopped.detached_after.as_micros() as u64);
        self.emit(if reason == "deadline" { "stop" } else { "abort" }, fields);
    }
}

/// The fields that say what was injected where.
pub fn attack_fields(attack: &Attack) -> Value {
    let mut v = serde_json::to_value(attack).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        let id = o.remove("id");
        o.insert("attack".into(), id.unwrap_or(Value::Null));
    }
    v
}
