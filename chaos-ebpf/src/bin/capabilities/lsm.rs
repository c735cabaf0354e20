//! A BPF LSM program on `file_open` that calls `bpf_loop`: needs
//! trampolines, `bpf` among the active LSMs, and `bpf_loop` (Linux 5.17),
//! which io-error's path walk runs under (chaos-ebpf/src/io/path.rs). A
//! kernel with the BPF LSM but without `bpf_loop` (Debian 11's 5.10 booted
//! with `lsm=...,bpf`) rejects the io-error programs, so it fails here too.
//! Returns 0 (allow), so it changes nothing if it fires.
use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_loop, macros::lsm, programs::LsmContext};

#[lsm(hook = "file_open")]
pub fn probe_lsm(_ctx: LsmContext) -> i32 {
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
