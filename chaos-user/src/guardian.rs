//! The guardian: a small process that restores an attack's cgroup
//! controls (`crate::controls`) when chaos cannot — for the faults the
//! kernel holds no deadline for (a frozen cgroup does not thaw by itself).
//!
//! chaos starts it (`chaos guardian`, the same executable) before changing
//! anything, in a session of its own (a Ctrl-C on chaos's terminal, or a
//! signal to chaos's process group, does not reach it), and hands it the
//! controls and the deadline on a pipe. chaos keeps the pipe's write end
//! and nothing else ever has it (close-on-exec), so the guardian reads an
//! end of file exactly when chaos is gone, however it went. The guardian
//! restores every control:
//!
//! - at once, when chaos dies without saying `done` (killed, crashed);
//! - at the deadline, when chaos is alive but has not ended the attack (it
//!   hangs, or is stopped);
//! - at once, on SIGTERM, SIGINT or SIGHUP (an operator's `kill`, or a
//!   service manager stopping everything);
//!
//! and exits without touching anything when chaos says `done` (it restored
//! them itself). chaos in turn watches the guardian (a pidfd): if the
//! guardian dies first, chaos restores at once and the fault ends early,
//! never later. What can still leave a control changed: both killed with
//! SIGKILL before either restores (e.g. `kill -9` of both at once, or the
//! OOM killer taking both). Then the control stays as chaos set it until
//! `chaos recover` — or the next chaos start, which recovers dead runs —
//! restores it from the state file, where it was recorded before the
//! write.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::process::CommandExt,
    },
    process::{Child, ChildStdin, Command, Stdio},
};

use serde::{Deserialize, Serialize};

use crate::{
    controls::{Control, Restored},
    timebase::monotonic_ns,
};

/// Where guardians live when not in their caller's cgroup
/// ([`place_in`]).
static HOME: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Start every guardian of this process in cgroup `dir` (a cgroup v2
/// directory) rather than in the caller's own. For a caller whose cgroup
/// is killed whole — a container stopped or killed by its runtime takes
/// every process of its cgroup (runc's `signalAllProcesses`) — a guardian
/// left in that cgroup would die with it and restore nothing. Set once; later
/// calls are ignored.
pub fn place_in(dir: std::path::PathBuf) {
    let _ = HOME.set(dir);
}

/// What the guardian is told first; the deadline follows
/// ([`Guardian::deadline`]), fixed once the guardian is ready, just before
/// the first control is changed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Instructions {
    /// The attack's id, for its messages.
    pub attack: String,
    pub controls: Vec<Control>,
}

/// The guardian of one attack, from chaos's side.
#[derive(Debug)]
pub struct Guardian {
    child: Child,
    /// The pipe's write end: dropped without `done`, the guardian restores.
    stdin: Option<ChildStdin>,
    pidfd: OwnedFd,
}

impl Guardian {
    /// Start the guardian of `instructions` and wait until it holds them.
    pub fn spawn(instructions: &Instructions) -> io::Result<Self> {
        // This very executable, even if replaced on disk meanwhile; named
        // as chaos is, so that `ps` and `pgrep -f 'chaos guardian'` show it.
        let mut cmd = Command::new("/proc/self/exe");
        let name = std::env::current_exe().map_or_else(|_| "chaos".into(), |p| p.into_os_string());
        cmd.arg0(name)
            .arg("guardian")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .current_dir("/");
        // SAFETY: setsid is async-signal-safe; it fails only for a process
        // group leader, which a fresh child is not.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let placed = match HOME.get() {
            // Before it holds anything: a guardian that cannot leave the
            // caller's cgroup would die with it.
            Some(home) => std::fs::write(home.join("cgroup.procs"), child.id().to_string()).map_err(|e| {
                io::Error::new(e.kind(), format!("moving the guardian into {}: {e}", home.display()))
            }),
            None => Ok(()),
        };
        let pidfd = match placed.and_then(|()| pidfd_open(child.id() as i32)) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let ready = (|| {
            let mut line = serde_json::to_vec(instructions).map_err(io::Error::other)?;
            line.push(b'\n');
            stdin.as_mut().expect("piped").write_all(&line)?;
            let mut answer = String::new();
            BufReader::new(stdout.expect("piped")).read_line(&mut answer)?;
            if answer.trim() == "ready" {
                Ok(())
            } else {
                Err(io::Error::other(format!("the guardian did not start: {:?}", answer.trim())))
            }
        })();
        if let Err(e) = ready {
            drop(stdin.take());
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(Self { child, stdin, pidfd })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The attack's deadline (CLOCK_MONOTONIC): the guardian restores the
    /// controls then, unless told `done` before.
    pub fn deadline(&mut self, deadline_ns: u64) -> io::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| io::Error::other("the guardian was told done"))?;
        stdin.write_all(format!("deadline {deadline_ns}\n").as_bytes())
    }

    /// A pidfd of it: readable once it has exited.
    pub fn pidfd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }

    /// chaos restored the controls itself: the guardian may go, touching
    /// nothing. Waits for it to exit.
    pub fn done(mut self) -> io::Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            // EPIPE: it is gone already (it acted at the deadline while chaos
            // was stopped, or was killed); chaos has restored anyway.
            match stdin.write_all(b"done\n") {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e),
                _ => {}
            }
        }
        self.child.wait().map(|_| ())
    }
}

impl Drop for Guardian {
    /// Without `done`, closing the pipe tells the guardian to restore now.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Why the guardian acted.
#[derive(Debug, PartialEq, Eq)]
enum Cause {
    ChaosGone,
    Deadline,
    Signal(i32),
}

/// `chaos guardian`: read the instructions on stdin, say `ready`, and
/// restore the controls when the time comes (see the module's doc).
pub fn run() -> io::Result<()> {
    // Unbuffered: what follows the instructions (`done`) is read after a
    // poll(2) of the fd, which sees nothing a buffer took already.
    // SAFETY: fd 0 is open (chaos's pipe) and stays open for the process's
    // life; ManuallyDrop keeps this File from closing it.
    let mut stdin = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(libc::STDIN_FILENO) });
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stdin.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let instructions: Instructions = serde_json::from_slice(&line).map_err(|e| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("the guardian's instructions: {e}"))
    })?;
    let signals = block_signals()?;
    {
        let mut out = io::stdout().lock();
        out.write_all(b"ready\n")?;
        out.flush()?;
    }
    // stdout is not needed any more; stderr stays for the messages.
    // SAFETY: closing our own stdout.
    unsafe { libc::close(libc::STDOUT_FILENO) };
    let cause = wait(&mut stdin, signals.as_raw_fd())?;
    let Some(cause) = cause else { return Ok(()) };
    let why = match cause {
        Cause::ChaosGone => "chaos exited before restoring".to_owned(),
        Cause::Deadline => "the attack's deadline passed and chaos had not ended it".to_owned(),
        Cause::Signal(s) => format!("the guardian got signal {s}"),
    };
    for control in &instructions.controls {
        match control.restore() {
            Ok(Restored::Restored) => {
                tracing::warn!(attack = %instructions.attack, "guardian: {why}: restored {control}")
            }
            Ok(Restored::AlreadyBack) => {}
            Ok(Restored::Gone(g)) => tracing::info!(attack = %instructions.attack, "guardian: {why}: {g}"),
            Ok(Restored::Changed(c)) => tracing::warn!(attack = %instructions.attack, "guardian: {why}: {c}"),
            Err(e) => {
                tracing::error!(attack = %instructions.attack, "guardian: {why}: restoring {control}: {e}")
            }
        }
    }
    Ok(())
}

/// Wait for chaos's `done` (`None`), its end, the deadline (from chaos's
/// `deadline N` line; none until then) or a signal.
fn wait(input: &mut std::fs::File, signals: RawFd) -> io::Result<Option<Cause>> {
    let mut said = Vec::new();
    let mut deadline_ns = None;
    loop {
        let left_ms = deadline_ns.map(|d: u64| d.saturating_sub(monotonic_ns()).div_ceil(1_000_000));
        if left_ms == Some(0) {
            return Ok(Some(Cause::Deadline));
        }
        let mut fds = [
            libc::pollfd { fd: input.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: signals, events: libc::POLLIN, revents: 0 },
        ];
        let timeout = left_ms.map_or(-1, |ms| i32::try_from(ms).unwrap_or(i32::MAX));
        // SAFETY: poll on two pollfds we own.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents & libc::POLLIN != 0 {
            // SAFETY: signalfd_siginfo is plain data; read fills it.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reading one record into `info`.
            let _ = unsafe { libc::read(signals, (&raw mut info).cast(), size) };
            return Ok(Some(Cause::Signal(info.ssi_signo as i32)));
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 64];
            match input.read(&mut buf) {
                Ok(0) => return Ok(Some(Cause::ChaosGone)),
                Ok(n) => {
                    said.extend_from_slice(&buf[..n]);
                    while let Some(end) = said.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = said.drain(..=end).collect();
                        match line.trim_ascii() {
                            b"done" => return Ok(None),
                            other => {
                                let ns = std::str::from_utf8(other)
                                    .ok()
                                    .and_then(|l| l.strip_prefix("deadline "))
                                    .and_then(|n| n.parse().ok());
                                match ns {
                                    Some(ns) => deadline_ns = Some(ns),
                                    // Not chaos speaking: act as if it were gone.
                                    None => return Ok(Some(Cause::ChaosGone)),
                                }
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(Some(Cause::ChaosGone)),
            }
        }
    }
}

/// SIGTERM, SIGINT and SIGHUP as a readable fd, blocked as signals.
fn block_signals() -> io::Result<OwnedFd> {
    // SAFETY: sigset operations on a set we own; sigprocmask and signalfd
    // on this (single-threaded) process.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `wait` on a pipe that carries `said`, then ends (or not).
    fn wait_for(said: &[u8], end: bool) -> Option<Cause> {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two new fds.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both are new fds, ours alone.
        let (rd, mut wr) =
            unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
        wr.write_all(said).unwrap();
        let _kept = if end {
            drop(wr);
            None
        } else {
            Some(wr)
        };
        let mut rd = rd;
        wait(&mut rd, -1).unwrap()
    }

    #[test]
    fn acts_at_the_deadline_on_chaos_s_end_and_not_after_done() {
        assert_eq!(wait_for(b"deadline 0\n", false), Some(Cause::Deadline));
        let soon = monotonic_ns() + 50_000_000;
        assert_eq!(wait_for(format!("deadline {soon}\n").as_bytes(), false), Some(Cause::Deadline));
        assert!(monotonic_ns() >= soon);
        let later = monotonic_ns() + 60_000_000_000;
        assert_eq!(wait_for(format!("deadline {later}\n").as_bytes(), true), Some(Cause::ChaosGone));
        assert_eq!(wait_for(b"", true), Some(Cause::ChaosGone));
        assert_eq!(wait_for(format!("deadline {later}\ndone\n").as_bytes(), false), None);
        assert_eq!(wait_for(b"nonsense\n", false), Some(Cause::ChaosGone));
    }

    #[test]
    fn instructions_round_trip() {
        let i = Instructions {
            attack: "a1".into(),
            controls: vec![Control {
                cgroup: "/sys/fs/cgroup/x".into(),
                id: 7,
                file: "cgroup.freeze".into(),
                key: None,
                previous: "0".into(),
                set: "1".into(),
            }],
        };
        let back: Instructions = serde_json::from_str(&serde_json::to_string(&i).unwrap()).unwrap();
        assert_eq!(back.controls, i.controls);
    }
}
