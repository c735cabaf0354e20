//! The embedded eBPF objects, and loading them.

use aya::{Ebpf, EbpfLoader, programs::ProgramError};
use chaos_abi::cgroup::Ancestry;

use crate::error::{Error, Result};

/// The fault programs (`chaos-ebpf/src/main.rs`).
static FAULTS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/chaos"));
/// The capability probes (`chaos-ebpf/src/bin/capabilities`).
static CAPABILITIES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capabilities"));

fn load(name: &str, bytes: &[u8], loader: &mut EbpfLoader<'_>) -> Result<Ebpf> {
    if bytes.is_empty() {
        return Err(Error::environment(format!(
            "this chaos binary was built with AYA_BUILD_SKIP=1 and has no {name} eBPF object; rebuild it with ./x build"
        )));
    }
    loader.load(bytes).map_err(|e| Error::kernel(format!("loading the {name} eBPF object"), e))
}

/// Parse the fault object and create its maps, with `ancestry` in its
/// read-only data (crate::ancestry). Programs are loaded into the kernel
/// one by one, when an attack needs them.
pub fn load_faults(ancestry: &Ancestry) -> Result<Ebpf> {
    load("fault", FAULTS, EbpfLoader::new().override_global(crate::ancestry::GLOBAL, ancestry, true))
}

/// The fault object's bytes, for loaders other than aya's
/// (crate::attach::fmod_ret).
pub fn faults_object() -> &'static [u8] {
    FAULTS
}

/// The capability-probe object's bytes.
pub fn capabilities_object() -> &'static [u8] {
    CAPABILITIES
}

/// Parse the capability-probe object.
pub fn load_capabilities() -> Result<Ebpf> {
    load("capability-probe", CAPABILITIES, &mut EbpfLoader::new())
}

/// Summarize an aya error: the errno, and the verifier's last words.
pub fn describe(err: &ProgramError) -> String {
    match err {
        ProgramError::LoadError { io_error, verifier_log } => {
            // The whole log for whoever debugs a new kernel (CHAOS_LOG=debug);
            // the error carries its last words.
            tracing::debug!("verifier log:\n{verifier_log}");
            load_failure(io_error, &verifier_log.to_string())
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

/// A failed BPF_PROG_LOAD: the errno, and the verifier's last line that is
/// a reason (not its statistics).
pub fn load_failure(io_error: &std::io::Error, log: &str) -> String {
    let last = log
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| {
            !l.is_empty()
                // The verifier's statistics (5.x: `processed N insns`;
                // 7.x: `insns processed N`), not a reason.
                && !["processed", "insns processed", "verification time", "stack depth"]
                    .iter()
                    .any(|p| l.starts_with(p))
        })
        .unwrap_or("");
    if last.is_empty() {
        format!("BPF_PROG_LOAD failed: {io_error}")
    } else {
        format!("BPF_PROG_LOAD failed: {io_error}; verifier: {last}")
    }
}
