//! SIGINT, SIGTERM and SIGHUP as messages, so that a controller waiting for
//! a deadline wakes at once when asked to stop.

use std::{
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    time::{Duration, Instant},
};

use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

pub struct SignalWatch {
    rx: Receiver<i32>,
    tx: Sender<i32>,
}

/// Not a signal: sent by [`SignalWatch::waker`] to end a wait early.
const WAKE: i32 = 0;

/// Why a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    Deadline,
    Tick,
    Signal(i32),
}

impl SignalWatch {
    pub fn install() -> std::io::Result<Self> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let (tx, rx) = mpsc::channel();
        let waker = tx.clone();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for sig in signals.forever() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self { rx, tx: waker })
    }

    /// A watch that no process signal reaches, and a handle that asks it to
    /// stop as SIGTERM would: for a run inside a process that lives longer
    /// than it (the Kubernetes agent runs one per attack, and stops one
    /// when its object is deleted).
    pub fn detached() -> (Self, impl Fn() + Send + Sync + 'static) {
        let (tx, rx) = mpsc::channel();
        let stop = tx.clone();
        (Self { rx, tx }, move || {
            let _ = stop.send(SIGTERM);
        })
    }

    /// A handle that ends the current (or next) [`Self::wait`] early with
    /// [`Wake::Tick`], from any thread: a health probe that turns unhealthy
    /// wakes the controller at once instead of at its next tick.
    pub fn waker(&self) -> impl Fn() + Send + Sync + 'static {
        let tx = self.tx.clone();
        move || {
            let _ = tx.send(WAKE);
        }
    }

    /// Wait until `deadline`, a signal, or `tick` elapsed, whichever first.
    pub fn wait(&self, deadline: Instant, tick: Duration) -> Wake {
        let now = Instant::now();
        if now >= deadline {
            return Wake::Deadline;
        }
        let until_deadline = deadline - now;
        let timeout = until_deadline.min(tick);
        match self.rx.recv_timeout(timeout) {
            Ok(WAKE) => Wake::Tick,
            Ok(sig) => Wake::Signal(sig),
            Err(RecvTimeoutError::Timeout) if timeout == until_deadline => Wake::Deadline,
            Err(RecvTimeoutError::Timeout) => Wake::Tick,
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                if timeout == until_deadline { Wake::Deadline } else { Wake::Tick }
            }
        }
    }

    /// A signal received since the last call, if any.
    pub fn pending(&self) -> Option<i32> {
        self.rx.try_iter().find(|sig| *sig != WAKE)
    }
}

pub fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "signal",
    }
}
