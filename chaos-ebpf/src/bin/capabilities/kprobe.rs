//! A kprobe (needs CONFIG_KPROBES).
use aya_ebpf::{macros::kprobe, programs::ProbeContext};

#[kprobe]
pub fn probe_kprobe(_ctx: ProbeContext) -> u32 {
    0
}
