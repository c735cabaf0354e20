//! A raw tracepoint (`sys_enter`).
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probe_raw_tracepoint(_ctx: RawTracePointContext) -> i32 {
    0
}
