//! `bpf_loop` (Linux 5.17) and its callback, as io-error's path walk calls
//! it (chaos-ebpf/src/io/path.rs): without it the walk is a bounded loop
//! of fewer steps. Loaded, never attached.
use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_loop, macros::raw_tracepoint, programs::RawTracePointContext};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probe_bpf_loop(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: `stop` has the callback signature bpf_loop expects and touches
    // nothing.
    unsafe { bpf_loop(1, stop as *mut c_void, core::ptr::null_mut(), 0) };
    0
}

/// bpf_loop's callback: 1 stops the loop.
#[inline(never)]
extern "C" fn stop(_index: u64, _ctx: *mut c_void) -> i64 {
    1
}
