//! File-operation tools for the io-error tests: they make raw system calls
//! (libc, no retries, no buffering) and report exactly the errno each call
//! returned — what the calling program sees.

use std::{
    collections::BTreeMap,
    ffi::CString,
    io::BufRead,
    os::unix::ffi::OsStrExt,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use serde::Deserialize;
use serde_json::json;

use super::{arg, command, monotonic_ns, ready};
use crate::fixtures::process::Place;

fn cstr(p: &str) -> anyhow::Result<CString> {
    Ok(CString::new(Path::new(p).as_os_str().as_bytes())?)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn opt(args: &[String], name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

/// Private mount namespace changes, made before anything else:
/// `--bind SRC DST` bind-mounts SRC on DST, `--tmpfs DST` mounts a tmpfs
/// on DST. They vanish with the process.
fn mounts(args: &[String]) -> anyhow::Result<()> {
    let bind = opt(args, "--bind");
    let tmpfs = opt(args, "--tmpfs");
    if bind.is_none() && tmpfs.is_none() {
        return Ok(());
    }
    // SAFETY: plain syscalls on C strings we own.
    unsafe {
        anyhow::ensure!(libc::unshare(libc::CLONE_NEWNS) == 0, "unshare: errno {}", errno());
        let root = cstr("/")?;
        anyhow::ensure!(
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null()
            ) == 0,
            "making / private: errno {}",
            errno()
        );
        if let Some(spec) = bind {
            let (src, dst) = spec.split_once(':').ok_or_else(|| anyhow::anyhow!("--bind SRC:DST"))?;
            let (src, dst) = (cstr(src)?, cstr(dst)?);
            anyhow::ensure!(
                libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null())
                    == 0,
                "bind mount: errno {}",
                errno()
            );
        }
        if let Some(dst) = tmpfs {
            let (fs, dst) = (cstr("tmpfs")?, cstr(&dst)?);
            anyhow::ensure!(
                libc::mount(fs.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) == 0,
                "tmpfs mount: errno {}",
                errno()
            );
        }
    }
    Ok(())
}

/// One file operation, repeated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Open,
    Read,
    Write,
    Readdir,
}

impl Op {
    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "open" => Self::Open,
            "read" => Self::Read,
            "write" => Self::Write,
            "readdir" => Self::Readdir,
            other => anyhow::bail!("unknown op {other}"),
        })
    }
}

/// An fd prepared for repeated calls of one operation.
struct Target {
    op: Op,
    path: CString,
    fd: i32,
}

impl Target {
    fn new(op: Op, path: &str, create: bool) -> anyhow::Result<Self> {
        let c = cstr(path)?;
        if create {
            // SAFETY: valid C string.
            let fd =
                unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC, 0o644) };
            anyhow::ensure!(fd >= 0, "creating {path}: errno {}", errno());
            // SAFETY: our fd.
            unsafe {
                libc::write(fd, b"0123456789".as_ptr().cast(), 10);
                libc::close(fd)
            };
        }
        let flags = match op {
            Op::Open => -1,
            Op::Read => libc::O_RDONLY,
            Op::Write => libc::O_WRONLY,
            Op::Readdir => libc::O_RDONLY | libc::O_DIRECTORY,
        };
        let fd = if flags >= 0 {
            // SAFETY: valid C string.
            let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
            anyhow::ensure!(fd >= 0, "opening {path}: errno {}", errno());
            fd
        } else {
            -1
        };
        Ok(Self { op, path: c, fd })
    }

    /// One call: 0 or the errno.
    fn call(&self) -> i32 {
        let mut buf = [0u8; 512];
        // SAFETY: valid fds, paths and buffers of the sizes passed.
        unsafe {
            match self.op {
                Op::Open => {
                    let fd = libc::open(self.path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return errno();
                    }
                    libc::close(fd);
                    0
                }
                Op::Read => {
                    if libc::pread(self.fd, buf.as_mut_ptr().cast(), 1, 0) < 0 {
                        errno()
                    } else {
                        0
                    }
                }
                Op::Write => {
                    if libc::pwrite(self.fd, b"x".as_ptr().cast(), 1, 0) < 0 {
                        errno()
                    } else {
                        0
                    }
                }
                Op::Readdir => {
                    libc::lseek(self.fd, 0, libc::SEEK_SET);
                    let n = libc::syscall(libc::SYS_getdents64, self.fd, buf.as_mut_ptr(), buf.len());
                    if n < 0 { errno() } else { 0 }
                }
            }
        }
    }
}

/// `io-calls --op OP --path P [--count N] [--seconds S] [--interval-us I]
/// [--create] [--wait] [--bind SRC:DST] [--tmpfs DST]`: repeat one
/// operation and print `{"calls", "ok", "errnos": {errno: n}, "seconds",
/// "failures": [[monotonic_ns, errno, call number], ...] (with --timeline),
/// "end_ns"}`. With
/// `--wait`, the file is prepared, `READY` printed, and the calls start
/// when a line arrives on stdin.
pub fn calls(args: &[String]) -> anyhow::Result<()> {
    mounts(args)?;
    let op = Op::parse(&arg::<String>(args, "--op")?)?;
    let path: String = arg(args, "--path")?;
    let target = Target::new(op, &path, args.iter().any(|a| a == "--create"))?;
    repeat(args, || target.call())
}

/// Repeat `call` (0: success, else its errno) as the flags say
/// (`[--count N] [--seconds S] [--interval-us I] [--timeline] [--wait]`)
/// and print `{"calls", "ok", "errnos", "seconds", "failures", "end_ns"}`:
/// the loop of `io-calls` and `conn-calls`. With `--wait`, `READY` is
/// printed and the calls start when a line arrives on stdin.
pub fn repeat(args: &[String], mut call: impl FnMut() -> i32) -> anyhow::Result<()> {
    let count: Option<u64> = opt(args, "--count").map(|v| v.parse()).transpose()?;
    let seconds: Option<f64> = opt(args, "--seconds").map(|v| v.parse()).transpose()?;
    let interval =
        opt(args, "--interval-us").map(|v| v.parse::<u64>()).transpose()?.map(Duration::from_micros);
    let timeline = args.iter().any(|a| a == "--timeline");
    if args.iter().any(|a| a == "--wait") {
        ready()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
    }
    let mut errnos: BTreeMap<i32, u64> = BTreeMap::new();
    let mut failures: Vec<[u64; 3]> = Vec::new();
    let (mut calls, mut ok) = (0u64, 0u64);
    let start = Instant::now();
    let until = seconds.map(|s| start + Duration::from_secs_f64(s));
    loop {
        if count.is_some_and(|n| calls >= n) || until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        let e = call();
        calls += 1;
        if e == 0 {
            ok += 1;
        } else {
            *errnos.entry(e).or_default() += 1;
            if timeline {
                failures.push([monotonic_ns(), e as u64, calls - 1]);
            }
        }
        if let Some(i) = interval {
            std::thread::sleep(i);
        }
        // Bound the loop when neither limit was given.
        if count.is_none() && until.is_none() && calls >= 1_000_000 {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({ "calls": calls, "ok": ok, "errnos": errnos, "seconds": secs, "failures": failures, "end_ns": monotonic_ns() })
    );
    Ok(())
}

/// `io-errnos --file F --dir D`: prepare fds for reading and writing F and
/// listing D, print `READY`, wait for a line on stdin, then try each
/// operation once and print `{"open": errno, "read": .., "write": ..,
/// "readdir": ..}` (0 = success).
pub fn errnos(args: &[String]) -> anyhow::Result<()> {
    let file: String = arg(args, "--file")?;
    let dir: String = arg(args, "--dir")?;
    let read = Target::new(Op::Read, &file, false)?;
    let write = Target::new(Op::Write, &file, false)?;
    let readdir = Target::new(Op::Readdir, &dir, false)?;
    let open = Target::new(Op::Open, &file, false)?;
    ready()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    println!(
        "{}",
        json!({ "open": open.call(), "read": read.call(), "write": write.call(), "readdir": readdir.call() })
    );
    Ok(())
}

/// What `io-calls` reports.
#[derive(Debug, Deserialize)]
pub struct Calls {
    pub calls: u64,
    pub ok: u64,
    pub errnos: BTreeMap<String, u64>,
    pub seconds: f64,
    #[serde(default)]
    pub failures: Vec<[u64; 3]>,
}

impl Calls {
    pub fn failed(&self) -> u64 {
        self.calls - self.ok
    }

    /// Failures with exactly this errno.
    pub fn with(&self, errno: i32) -> u64 {
        self.errnos.get(&errno.to_string()).copied().unwrap_or(0)
    }

    pub fn per_second(&self) -> f64 {
        self.calls as f64 / self.seconds
    }

    /// For the safety suite (with `--timeline`): the fault was in force and
    /// ended (more than `min` of the `noun` failed, more than `min`
    /// succeeded), and none failed after `until_ns`; prints when the last
    /// failure came, from `end_ns`.
    pub fn ensure_ended(
        &self,
        noun: &str,
        min: usize,
        until_ns: u64,
        end_ns: u64,
        what: &str,
    ) -> anyhow::Result<()> {
        let failed = self.failures.len();
        anyhow::ensure!(
            failed > min,
            "{what}: only {failed} {noun} failed: the fault was not in force ({} succeeded)",
            self.ok
        );
        anyhow::ensure!(
            self.ok > min as u64,
            "{what}: only {} {noun} succeeded: the fault never ended",
            self.ok
        );
        let last = self.failures.iter().map(|f| f[0]).max().unwrap_or(0);
        let late_ms = (last as i64 - end_ns as i64) as f64 / 1e6;
        anyhow::ensure!(
            last <= until_ns,
            "{what}: {noun} still failed {late_ms:.1} ms after the fault should have ended"
        );
        eprint!("[last failure {late_ms:+.1} ms from {what}] ");
        Ok(())
    }
}

fn parse(out: &std::process::Output, what: &str) -> anyhow::Result<Calls> {
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).map_err(|e| anyhow::anyhow!("{what} said {text:?}: {e}"))
}

/// Run `io-calls` in `place` to completion.
pub fn run(place: Place<'_>, args: &[&str]) -> anyhow::Result<Calls> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    run_command(place, &mut command("io-calls", &args))
}

/// `io-calls` with its working directory at `dir` (for relative paths).
pub fn command_in(dir: &Path, args: &[&str]) -> std::process::Command {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut cmd = command("io-calls", &args);
    cmd.current_dir(dir);
    cmd
}

/// Run a prepared `io-calls` command in `place` to completion.
pub fn run_command(place: Place<'_>, cmd: &mut std::process::Command) -> anyhow::Result<Calls> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let out = place.spawn(cmd)?.wait_with_output()?;
    parse(&out, &what)
}

/// `io-calls` prepared and waiting (`--wait`): [`Waiting::go`] starts the
/// calls.
pub struct Waiting {
    child: Option<std::process::Child>,
    what: String,
}

impl Waiting {
    pub fn start(place: Place<'_>, tool: &str, args: &[&str]) -> anyhow::Result<Self> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut cmd = command(tool, &args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = place.spawn(&mut cmd)?;
        let mut line = String::new();
        let stdout = child.stdout.as_mut().expect("piped");
        // Read byte by byte so that nothing after READY is consumed.
        let mut byte = [0u8; 1];
        while std::io::Read::read(stdout, &mut byte)? == 1 && byte[0] != b'\n' {
            line.push(byte[0] as char);
        }
        let what = format!("{tool} {}", args.join(" "));
        let waiting = Self { child: Some(child), what };
        anyhow::ensure!(line.trim() == "READY", "{} did not get ready: {line:?}", waiting.what);
        Ok(waiting)
    }

    /// Start the calls and wait for the result (as JSON).
    pub fn go(mut self) -> anyhow::Result<std::process::Output> {
        use std::io::Write as _;
        let mut child = self.child.take().expect("not started yet");
        let sent = child.stdin.take().expect("piped").write_all(b"go\n");
        // Closing stdin (the pipe drops above) also ends a helper that did
        // not get the line: wait in every case.
        let out = child.wait_with_output()?;
        sent?;
        anyhow::ensure!(
            out.status.success(),
            "{} failed ({}): {}",
            self.what,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(out)
    }

    pub fn calls(self) -> anyhow::Result<Calls> {
        let what = self.what.clone();
        let out = self.go()?;
        parse(&out, &what)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
