//! `kill`: the target's processes are killed — all of them, its main
//! process, or those of one name — once or at intervals, as when the OOM
//! killer strikes, a node's kubelet evicts, or a process crashes. What
//! matters is what happens next: whether the service manager, container
//! runtime or supervisor restarts it, and how soon; the attack reports it.

use std::time::Duration;

use serde::Serialize;

use crate::units::format_duration;

/// The shortest `--every`: each round reads the target's processes, and a
/// restart needs time to happen between two rounds.
pub const MIN_EVERY: Duration = Duration::from_millis(100);

/// The most a process name (`comm`) holds: TASK_COMM_LEN, 16 with its NUL
/// (include/linux/sched.h).
pub const COMM_MAX: usize = 15;

/// Which of the target's processes are killed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Victims {
    /// Every process of the target and of its descendant cgroups.
    All,
    /// The target's main process: the oldest of those whose parent is
    /// outside the target (a container's init, a service's main process).
    Main,
    /// The processes whose name (`comm`) is this.
    Named(String),
}

/// The signals `kill` sends: those that end a process or make it dump or
/// report. SIGSTOP is `pause`'s, and SIGCONT is no fault.
pub const SIGNALS: &[(&str, i32)] = &[
    ("KILL", libc::SIGKILL),
    ("TERM", libc::SIGTERM),
    ("INT", libc::SIGINT),
    ("HUP", libc::SIGHUP),
    ("QUIT", libc::SIGQUIT),
    ("ABRT", libc::SIGABRT),
    ("SEGV", libc::SIGSEGV),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
];

/// A signal of [`SIGNALS`], by its name without `SIG`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(pub &'static str);

impl Signal {
    pub const KILL: Self = Self("KILL");

    /// `KILL`, `SIGKILL`, `kill`, ...
    pub fn parse(text: &str) -> Result<Self, String> {
        let upper = text.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        if let Some((n, _)) = SIGNALS.iter().find(|(n, _)| *n == name) {
            return Ok(Self(n));
        }
        let names: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
        let hint = match name {
            "STOP" | "TSTP" => {
                " (to stop the target's processes and let them go on later, use `chaos attack pause`)"
            }
            _ => "",
        };
        Err(format!("--signal {text:?}: expected one of {}{hint}", names.join(", ")))
    }

    pub fn number(self) -> i32 {
        SIGNALS.iter().find(|(n, _)| *n == self.0).map_or(libc::SIGKILL, |(_, s)| *s)
    }
}

impl Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

/// `kill`: which processes, with which signal, how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kill {
    pub victims: Victims,
    pub signal: Signal,
    /// The time between rounds; one round, at the start, when absent.
    pub every: Option<Duration>,
}

/// As a step of an experiment file writes it: `process: all|main` or
/// `process-name: NAME`, `signal`, `every`.
impl Serialize for Kill {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        match &self.victims {
            Victims::All => m.serialize_entry("process", "all")?,
            Victims::Main => m.serialize_entry("process", "main")?,
            Victims::Named(n) => m.serialize_entry("process-name", n)?,
        }
        m.serialize_entry("signal", &self.signal)?;
        if let Some(every) = self.every {
            m.serialize_entry("every", &format_duration(every))?;
        }
        m.end()
    }
}

impl Kill {
    pub fn new(
        main: bool,
        name: Option<&str>,
        signal: Signal,
        every: Option<Duration>,
    ) -> Result<Self, String> {
        let victims = match (main, name) {
            (true, Some(_)) => {
                return Err(
                    "--process main and --name exclude each other: --name picks processes by name".into()
                );
            }
            (true, None) => Victims::Main,
            (false, None) => Victims::All,
            (false, Some(n)) => {
                if n.is_empty() || n.contains('/') || n.contains('\0') {
                    return Err(format!(
                        "--name {n:?}: a process name (as `ps -o comm` shows it), without `/`"
                    ));
                }
                if n.len() > COMM_MAX {
                    return Err(format!(
                        "--name {n:?} is longer than a process name can be ({COMM_MAX} bytes: the kernel keeps \
                         the first {COMM_MAX}); give {:?}",
                        String::from_utf8_lossy(&n.as_bytes()[..COMM_MAX])
                    ));
                }
                Victims::Named(n.to_owned())
            }
        };
        if let Some(every) = every
            && every < MIN_EVERY
        {
            return Err(format!(
                "--every {} is too often: at least {} (a restart needs time to happen between two rounds)",
                format_duration(every),
                format_duration(MIN_EVERY)
            ));
        }
        Ok(Self { victims, signal, every })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_choose_the_victims_and_the_signal() {
        assert_eq!(Kill::new(false, None, Signal::KILL, None).unwrap().victims, Victims::All);
        assert_eq!(Kill::new(true, None, Signal::KILL, None).unwrap().victims, Victims::Main);
        assert_eq!(
            Kill::new(false, Some("nginx"), Signal::KILL, None).unwrap().victims,
            Victims::Named("nginx".into())
        );
        assert!(Kill::new(true, Some("x"), Signal::KILL, None).unwrap_err().contains("exclude"));
        assert!(Kill::new(false, Some("a/b"), Signal::KILL, None).is_err());
        let e = Kill::new(false, Some("kube-controller-manager"), Signal::KILL, None).unwrap_err();
        assert!(e.contains("give \"kube-controller\""), "{e}");
        assert!(
            Kill::new(false, None, Signal::KILL, Some(Duration::from_millis(50)))
                .unwrap_err()
                .contains("too often")
        );
        assert_eq!(Signal::parse("term").unwrap().number(), libc::SIGTERM);
        assert_eq!(Signal::parse("SIGKILL").unwrap(), Signal::KILL);
        assert!(Signal::parse("STOP").unwrap_err().contains("pause"));
        assert!(Signal::parse("9").is_err());
    }

    #[test]
    fn steps_build_the_same_fault_as_the_flags() {
        use crate::faults::{Fault, fault_of_step as parse};
        let f = parse("{fault: kill, name: k, process-name: nginx, signal: TERM, every: 30s, duration: 5m}")
            .unwrap();
        let want = Kill::new(false, Some("nginx"), Signal("TERM"), Some(Duration::from_secs(30))).unwrap();
        assert_eq!(f, Fault::Kill(want));
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"fault":"kill","process-name":"nginx","signal":"TERM","every":"30s"}"#
        );
        assert_eq!(
            parse("{fault: kill, process: main, duration: 1m}").unwrap(),
            Fault::Kill(Kill::new(true, None, Signal::KILL, None).unwrap())
        );
    }
}
