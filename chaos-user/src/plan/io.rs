//! I/O faults: BPF LSM programs on `file_open` and `file_permission` where
//! the kernel runs the `bpf` LSM; else fmod_ret programs on
//! `security_file_open` and `security_file_permission`, the functions that
//! call every LSM's hooks (BPF trampolines suffice: no `lsm=` change, so
//! Ubuntu's default kernels serve). Both run the same decision
//! (chaos-ebpf/src/io/mod.rs). The LSM comes first: it runs in the LSM
//! order beside the others, where fmod_ret skips the function, and so
//! every LSM, when it fails a call (harmless: the call fails either way).
//!
//! Another candidate, a kprobe calling
//! `bpf_override_return` on error-injectable functions (kernels with
//! CONFIG_BPF_KPROBE_OVERRIDE: Ubuntu, Amazon Linux), is probed (`chaos
//! doctor` shows it) but not implemented: no kernel we can test on has it
//! (Debian's lack the option, the host lacks kprobes), and an injection
//! path that was never run is not shipped. See chaos-user/src/injector/io.rs
//! for what it would take.

use serde::Serialize;

use super::{FamilyMechanism, Held, first_available};
use crate::{
    capabilities::{Capability, Findings},
    error::{Error, Result},
};

/// The kernel hook family an I/O fault goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoVia {
    BpfLsm,
    FmodRet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct IoMechanism {
    pub via: IoVia,
    /// `lsm/file_open`: opens, and the calibration of the paths (always).
    pub file_open: bool,
    /// `lsm/file_permission`: reads, writes, directory reads.
    pub file_permission: bool,
}

/// `read_write`: the fault fails reads, writes or directory reads, not
/// only opens. `forced`: `CHAOS_IO_VIA`, still only where `caps` allows.
pub fn plan(
    subject: &str,
    read_write: bool,
    caps: &dyn Findings,
    forced: Option<IoVia>,
) -> Result<IoMechanism> {
    let via = first_available(
        subject,
        "io-error",
        &[(IoVia::BpfLsm, Capability::BpfLsm), (IoVia::FmodRet, Capability::FmodRet)],
        forced,
        caps,
    )
    .map_err(|e| {
        let unknown = [Capability::BpfLsm, Capability::FmodRet].iter().any(|c| caps.is_unknown(*c));
        if forced.is_some() || unknown { e } else { refused(subject, caps) }
    })?;
    Ok(IoMechanism { via, file_open: true, file_permission: read_write })
}

/// Why no mechanism serves: each candidate's own reason.
fn refused(subject: &str, caps: &dyn Findings) -> Error {
    let lsm = caps.detail(Capability::BpfLsm);
    let fmod_ret = caps.detail(Capability::FmodRet);
    let kprobe = if caps.has(Capability::KprobeOverride) {
        "kprobe + bpf_override_return works on this kernel, but chaos does not implement io-error with it \
         yet (it was never tested: no kernel chaos is tested on has CONFIG_BPF_KPROBE_OVERRIDE)"
            .to_owned()
    } else {
        format!("kprobe + bpf_override_return: {}", caps.detail(Capability::KprobeOverride))
    };
    Error::environment(format!(
        "{subject} is unavailable because no mechanism works on this kernel: BPF LSM: {lsm}; fmod_ret: \
         {fmod_ret}; {kprobe}. io-error needs BPF trampolines and bpf_loop (Linux 5.17), with the `bpf` LSM \
         active (CONFIG_BPF_LSM, boot with lsm=...,bpf) or fmod_ret programs allowed; `chaos doctor` shows \
         every mechanism",
    ))
}

impl FamilyMechanism for IoMechanism {
    fn describe(&self) -> String {
        let (via, open, rw) = match self.via {
            IoVia::BpfLsm => ("BPF LSM", "lsm/file_open", "lsm/file_permission"),
            IoVia::FmodRet => ("fmod_ret", "security_file_open", "security_file_permission"),
        };
        let mut parts = vec![open];
        if self.file_permission {
            parts.push(rw);
        }
        format!("{via}: {}", parts.join(", "))
    }

    fn held(&self) -> Held {
        let links = match self.via {
            IoVia::BpfLsm => "BPF LSM links",
            IoVia::FmodRet => "fmod_ret links",
        };
        Held { links: vec![links], recorded: Vec::new() }
    }
}
