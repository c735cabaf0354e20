//! The JSON-lines subscriber: one object per line, flushed at once, so a
//! reader following the file (or the pipe) sees each event as it happens.

use std::{io::Write, time::SystemTime};

use super::{Line, RunEvent, Subscriber};
use crate::timebase::rfc3339;

pub struct JsonLines {
    out: Box<dyn Write + Send>,
}

impl JsonLines {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out }
    }
}

impl Subscriber for JsonLines {
    fn on(&mut self, at: SystemTime, event: &RunEvent) {
        let line = Line { time: rfc3339(at), event };
        // A reader that went away (a closed pipe) must not stop the run,
        // whose faults still need stopping.
        if let Ok(text) = serde_json::to_string(&line) {
            let _ = writeln!(self.out, "{text}");
            let _ = self.out.flush();
        }
    }
}
