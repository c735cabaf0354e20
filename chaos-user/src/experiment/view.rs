//! The live view of a run on a terminal: a block of lines (progress, each
//! attack with its counters, each probe with its state) redrawn in place
//! every tick, with lasting messages printed above it. Without a terminal
//! only the lasting messages are printed, one per line, for CI logs.
//!
//! The block is drawn by a subscriber of the run's bus ([`LiveView`]), from
//! the progress the runner publishes every tick; the runner prints the
//! lasting messages through its own handle ([`Screen`]) on the same view.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use super::describe::{clock, dur};
use crate::events::{Progress, RunEvent, Subscriber};

/// A handle on one view, shared by the runner and the bus.
#[derive(Clone)]
pub struct Screen(Arc<Mutex<View>>);

impl Screen {
    pub fn new(live: bool) -> Self {
        Self(Arc::new(Mutex::new(View::new(live))))
    }

    pub fn say(&self, line: &str) {
        self.with(|v| v.say(line));
    }

    pub fn clear(&self) {
        self.with(View::clear);
    }

    fn with<T>(&self, f: impl FnOnce(&mut View) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The live block of a run: its title line, each running attack, each
/// probe.
pub struct LiveView {
    pub screen: Screen,
    pub experiment: String,
    /// The method's planned length and the maximum duration.
    pub planned: Duration,
    pub max: Duration,
}

impl Subscriber for LiveView {
    // Events show in the block as it changes (an attack's line appears and
    // goes, a probe turns UNHEALTHY); they are not printed again.
    fn on(&mut self, _: SystemTime, _: &RunEvent) {}

    fn progress(&mut self, p: &Progress) {
        let lines = self.lines(p);
        self.screen.with(|v| v.draw(&lines));
    }
}

impl LiveView {
    fn lines(&self, p: &Progress) -> Vec<String> {
        let mut lines = vec![format!(
            "▶ {} · {} · {} elapsed (method {}, max {})",
            self.experiment,
            p.phase,
            clock(p.elapsed),
            dur(self.planned),
            dur(self.max)
        )];
        for a in &p.attacks {
            let fraction = a.done.as_secs_f64() / a.duration.as_secs_f64().max(1e-9);
            lines.push(format!(
                "  {:<16} {} {:>5}/{:<5} injected into {} of {} events",
                a.id,
                bar(fraction, 20),
                clock(a.done),
                dur(a.duration),
                a.counters.injected,
                a.counters.matched
            ));
        }
        for w in &p.probes {
            let s = &w.stats;
            let state = if s.checks == 0 {
                "…".to_owned()
            } else if !s.healthy {
                "UNHEALTHY".to_owned()
            } else if s.consecutive_failures > 0 {
                format!("failing {}/{}", s.consecutive_failures, w.failures)
            } else {
                "ok".to_owned()
            };
            lines.push(format!(
                "  {:<16} {:<10} {:>4} checks {:>3} failed  {}",
                w.name,
                state,
                s.checks,
                s.failed,
                s.last_detail.chars().take(60).collect::<String>()
            ));
        }
        lines
    }
}

struct View {
    live: bool,
    /// Lines of the block currently on screen.
    drawn: usize,
}

impl View {
    fn new(live: bool) -> Self {
        Self { live, drawn: 0 }
    }

    /// Replace the block with `lines`.
    fn draw(&mut self, lines: &[String]) {
        if !self.live {
            return;
        }
        let width = terminal_width();
        let mut out = String::new();
        out += &self.erase();
        for l in lines {
            let cut: String = l.chars().take(width.saturating_sub(1)).collect();
            out += &format!("{cut}\x1b[K\n");
        }
        self.drawn = lines.len();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
    }

    /// Print a lasting line (above the block, which is redrawn next tick).
    fn say(&mut self, line: &str) {
        let erase = self.erase();
        self.drawn = 0;
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{erase}chaos: {line}");
        let _ = err.flush();
    }

    /// Remove the block (at the end of a run).
    fn clear(&mut self) {
        if self.drawn > 0 {
            let erase = self.erase();
            self.drawn = 0;
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(erase.as_bytes());
            let _ = err.flush();
        }
    }

    fn erase(&self) -> String {
        if self.drawn == 0 { String::new() } else { format!("\x1b[{}A\x1b[J", self.drawn) }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.clear();
    }
}

fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills the winsize we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 20 {
            return usize::from(ws.ws_col);
        }
    }
    100
}

/// `███░░░░` for a fraction in 0..=1.
pub fn bar(fraction: f64, width: usize) -> String {
    let full = ((fraction.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("{}{}", "█".repeat(full), "░".repeat(width - full))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_view_lines_come_from_the_progress() {
        use crate::{
            counters::Counters,
            events::{AttackProgress, ProbeProgress},
            probes::{Role, Stats},
        };
        let view = LiveView {
            screen: Screen::new(false),
            experiment: "lossy".into(),
            planned: Duration::from_secs(60),
            max: Duration::from_secs(300),
        };
        let mut stats = Stats::default();
        (stats.checks, stats.failed, stats.healthy) = (9, 4, false);
        let progress = Progress {
            phase: "step 1/2 `loss`".into(),
            elapsed: Duration::from_secs(5),
            attacks: vec![AttackProgress {
                id: "loss".into(),
                fault: "net-loss".into(),
                target: "/t".into(),
                done: Duration::from_secs(5),
                duration: Duration::from_secs(10),
                counters: Counters { matched: 40, injected: 2, ..Default::default() },
            }],
            probes: vec![ProbeProgress { name: "health".into(), role: Role::Hypothesis, failures: 3, stats }],
        };
        let lines = view.lines(&progress);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].contains("lossy") && lines[0].contains("step 1/2 `loss`"), "{lines:?}");
        assert!(lines[1].contains("██████████░░░░░░░░░░") && lines[1].contains("into 2 of 40"), "{lines:?}");
        assert!(lines[2].contains("UNHEALTHY") && lines[2].contains("9 checks   4 failed"), "{lines:?}");
    }

    #[test]
    fn bars() {
        assert_eq!(bar(0.0, 4), "░░░░");
        assert_eq!(bar(0.5, 4), "██░░");
        assert_eq!(bar(2.0, 4), "████");
    }
}
