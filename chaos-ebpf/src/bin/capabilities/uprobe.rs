//! A uprobe, attached to a function of the chaos binary itself.
use aya_ebpf::{macros::uprobe, programs::ProbeContext};

#[uprobe]
pub fn probe_uprobe(_ctx: ProbeContext) -> u32 {
    0
}
