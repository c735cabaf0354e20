//! The embedded eBPF objects, and loading them.

use aya::{Ebpf, EbpfLoader, programs::ProgramError};

use crate::error::{Error, Result};

/// The fault programs (`chaos-ebpf/src/main.rs`).
static FAULTS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/chaos"));
/// The capability probes (`chaos-ebpf/src/bin/capabilities`).
static CAPABILITIES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capabilities"));

fn load(name: &str, bytes: &[u8]) -> Result<Ebpf> {
    if bytes.is_empty() {
        return Err(Error::environment(format!(
            "this chaos binary was built with AYA_BUILD_SKIP=1 and has no {name} eBPF object; rebuild it with ./x build"
        )));
    }
    EbpfLoader::new().load(bytes).map_err(|e| Error::kernel(format!("loading the {name} eBPF object"), e))
}

/// Parse the fault object and create its maps. Programs are loaded into the
/// kernel one by one, when an attack needs them.
pub fn load_faults() -> Result<Ebpf> {
    load("fault", FAULTS)
}

/// Parse the capability-probe object.
pub fn load_capabilities() -> Result<Ebpf> {
    load("capability-probe", CAPABILITIES)
}

/// Forward aya-log records from eBPF programs into `tracing`, under the
/// target `ebpf`. Records are read by a thread that polls the log ring.
pub fn forward_logs(ebpf: &mut Ebpf) {
    match aya_log::EbpfLogger::init_with_logger(ebpf, TracingLog) {
        Ok(mut logger) => {
            std::thread::Builder::new()
                .name("ebpf-log".into())
                .spawn(move || {
                    use std::os::fd::AsRawFd;
                    let fd = logger.as_raw_fd();
                    loop {
                        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                        // SAFETY: one pollfd we own; the logger outlives the loop.
                        let n = unsafe { libc::poll(&mut pfd, 1, 1000) };
                        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                        {
                            return;
                        }
                        logger.flush();
                    }
                })
                .ok();
        }
        Err(e) => tracing::debug!("eBPF logs not forwarded: {e}"),
    }
}

/// A `log::Log` that re-emits records as tracing events.
struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "ebpf", "{msg}"),
            log::Level::Warn => tracing::warn!(target: "ebpf", "{msg}"),
            log::Level::Info => tracing::info!(target: "ebpf", "{msg}"),
            log::Level::Debug => tracing::debug!(target: "ebpf", "{msg}"),
            log::Level::Trace => tracing::trace!(target: "ebpf", "{msg}"),
        }
    }

    fn flush(&self) {}
}

/// Summarize an aya error: the errno, and the verifier's last words.
pub fn describe(err: &ProgramError) -> String {
    match err {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            let last = log
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| {
                    !l.is_empty()
                        && !["processed", "verification time", "stack depth"].iter().any(|p| l.starts_with(p))
                })
                .unwrap_or("");
            if last.is_empty() {
                format!("BPF_PROG_LOAD failed: {io_error}")
            } else {
                format!("BPF_PROG_LOAD failed: {io_error}; verifier: {last}")
            }
        }
        other => {
            let mut s = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(e) = source {
                s = format!("{s}: {e}");
                source = e.source();
            }
            s
        }
    }
}
