//! I/O faults: BPF LSM programs on `file_open` and `file_permission`, where
//! the kernel runs the `bpf` LSM. Nothing else realizes them today; the
//! error says what each candidate lacks on this kernel.
//!
//! The other candidate the issue names, a kprobe calling
//! `bpf_override_return` on error-injectable functions (kernels with
//! CONFIG_BPF_KPROBE_OVERRIDE: Ubuntu, Amazon Linux), is probed (`chaos
//! doctor` shows it) but not implemented: no kernel we can test on has it
//! (Debian's lack the option, the host lacks kprobes), and an injection
//! path that was never run is not shipped. See chaos-user/src/injector/io.rs
//! for what it would take.

use serde::Serialize;

use super::{FamilyMechanism, Held, unavailable};
use crate::{
    capabilities::{Capability, CapabilitySet},
    error::{Error, Result},
};

/// The kernel hook family an I/O fault goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoVia {
    BpfLsm,
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
/// only opens.
pub fn plan(subject: &str, read_write: bool, caps: &CapabilitySet) -> Result<IoMechanism> {
    if caps.has(Capability::BpfLsm) {
        return Ok(IoMechanism { via: IoVia::BpfLsm, file_open: true, file_permission: read_write });
    }
    if caps.is_unknown(Capability::BpfLsm) {
        return Err(unavailable(subject, "BPF LSM", &[Capability::BpfLsm], caps));
    }
    let lsm = caps.detail(Capability::BpfLsm);
    let kprobe = if caps.has(Capability::KprobeOverride) {
        "kprobe + bpf_override_return works on this kernel, but chaos does not implement io-error with it \
         yet (it was never tested: no kernel chaos is tested on has CONFIG_BPF_KPROBE_OVERRIDE)"
            .to_owned()
    } else {
        format!("kprobe + bpf_override_return: {}", caps.detail(Capability::KprobeOverride))
    };
    Err(Error::environment(format!(
        "{subject} is unavailable because no mechanism works on this kernel: BPF LSM: {lsm}; {kprobe}. \
         io-error needs the `bpf` LSM active (CONFIG_BPF_LSM, boot with lsm=...,bpf) and BPF trampolines; \
         `chaos doctor` shows every mechanism",
    )))
}

impl FamilyMechanism for IoMechanism {
    fn describe(&self) -> String {
        let mut parts = vec!["BPF LSM: lsm/file_open"];
        if self.file_permission {
            parts.push("lsm/file_permission");
        }
        parts.join(", ")
    }

    fn held(&self) -> Held {
        Held { links: vec!["BPF LSM links"], recorded: Vec::new() }
    }
}
