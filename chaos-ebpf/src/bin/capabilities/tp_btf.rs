//! A BTF-typed raw tracepoint (`tp_btf/sys_enter`).
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

#[btf_tracepoint(function = "sys_enter")]
pub fn probe_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}
