//! The live view of a run on a terminal: a block of lines (progress, each
//! attack with its counters, each probe with its state) redrawn in place
//! every tick, with lasting messages printed above it. Without a terminal
//! only the lasting messages are printed, one per line, for CI logs.

use std::io::Write;

pub struct View {
    live: bool,
    /// Lines of the block currently on screen.
    drawn: usize,
}

impl View {
    pub fn new(live: bool) -> Self {
        Self { live, drawn: 0 }
    }

    /// Replace the block with `lines`.
    pub fn draw(&mut self, lines: &[String]) {
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
    pub fn say(&mut self, line: &str) {
        let erase = self.erase();
        self.drawn = 0;
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{erase}chaos: {line}");
        let _ = err.flush();
    }

    /// Remove the block (at the end of a run).
    pub fn clear(&mut self) {
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
    fn bars() {
        assert_eq!(bar(0.0, 4), "░░░░");
        assert_eq!(bar(0.5, 4), "██░░");
        assert_eq!(bar(2.0, 4), "████");
    }
}
