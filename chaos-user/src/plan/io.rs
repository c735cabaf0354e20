//! I/O faults: BPF LSM programs on `file_open` and `file_permission` where
//! the kernel runs the `bpf` LSM; else fmod_ret programs on
//! `security_file_open` and `security_file_permission`, the functions that
//! call every LSM's hooks (BPF trampolines suffice: no `lsm=` change, so
//! Ubuntu's default kernels serve). Both run the same decision
//! (chaos-ebpf/src/io/mod.rs). The LSM comes first: it runs in the LSM
//! order beside the others, where fmod_ret skips the function, and so
//! every LSM, when it fails a call (harmless: the call fails either way).
//! The LSM programs walk paths under `bpf_loop` (5.17); fmod_ret has a
//! second pair for kernels without it (a bounded walk of 16 steps, no
//! call windows: [`IoWalk::Bounded`]).
//!
//! Another candidate, a kprobe calling
//! `bpf_override_return` on error-injectable functions (kernels with
//! CONFIG_BPF_KPROBE_OVERRIDE: Ubuntu, Amazon Linux), is probed (`chaos
//! doctor` shows it) but not implemented: no kernel we can test on has it
//! (Debian's lack the option, the host lacks kprobes), and an injection
//! path that was never run is not shipped. See chaos-user/src/injector/io.rs
//! for what it would take.

use serde::Serialize;

use super::{Ancestry, FamilyMechanism, Held, first_available};
use crate::{
    capabilities::{Capability, Findings},
    error::{Error, Result},
};

/// How the programs walk a file's path up to the rule's prefixes
/// (chaos-ebpf/src/io/path.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoWalk {
    /// Under `bpf_loop` (Linux 5.17): up to `MAX_DEPTH` steps.
    BpfLoop,
    /// A bounded loop: up to `MAX_DEPTH_BOUNDED` steps (fmod_ret only).
    Bounded,
}

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
    pub walk: IoWalk,
    pub ancestry: Ancestry,
}

/// `read_write`: the fault fails reads, writes or directory reads, not
/// only opens. `windowed`: it counts calls (`--after`, `--first`).
/// `forced`: `CHAOS_IO_VIA`, still only where `caps` allows.
pub fn plan(
    subject: &str,
    read_write: bool,
    windowed: bool,
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
    // The BPF LSM's probe loads a program with bpf_loop, as io-error's LSM
    // programs are; fmod_ret has a variant without it for older kernels.
    let walk =
        if via == IoVia::BpfLsm || caps.has(Capability::BpfLoop) { IoWalk::BpfLoop } else { IoWalk::Bounded };
    // The programs for kernels without bpf_loop are built without atomic
    // fetch-and-add (Linux 5.12; 5.10's verifier refuses the instruction),
    // which numbers the calls of a window exactly across CPUs.
    if walk == IoWalk::Bounded && windowed {
        return Err(Error::environment(format!(
            "{subject}: --after/--first are not available on this kernel: io-error's programs for kernels \
             without bpf_loop (Linux 5.17; {}) cannot number calls exactly across CPUs (no atomic \
             fetch-and-add before Linux 5.12); use --percent alone",
            caps.detail(Capability::BpfLoop)
        )));
    }
    let ancestry = super::ancestry(subject, caps)?;
    Ok(IoMechanism { via, file_open: true, file_permission: read_write, walk, ancestry })
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
         {fmod_ret}; {kprobe}. io-error needs BPF trampolines, with the `bpf` LSM active (CONFIG_BPF_LSM, \
         boot with lsm=...,bpf; and bpf_loop, Linux 5.17) or fmod_ret programs allowed; `chaos doctor` shows \
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
        let mut text = format!("{via}: {}", parts.join(", "));
        if self.walk == IoWalk::Bounded {
            text.push_str(&format!(
                " (path walk without bpf_loop: up to {} levels)",
                chaos_abi::io::MAX_DEPTH_BOUNDED
            ));
        }
        if self.ancestry == Ancestry::TaskRead {
            text.push_str(&format!(", {}", self.ancestry.describe()));
        }
        text
    }

    fn held(&self) -> Held {
        let links = match self.via {
            IoVia::BpfLsm => "BPF LSM links",
            IoVia::FmodRet => "fmod_ret links",
        };
        Held { links: vec![links], recorded: Vec::new() }
    }
}
