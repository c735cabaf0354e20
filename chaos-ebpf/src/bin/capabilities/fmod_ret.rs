//! An fmod_ret program on `security_file_open` that calls `bpf_loop`, as
//! io-error's fmod_ret programs do (chaos-ebpf/src/io_fmod_open.rs): needs
//! trampolines, BPF_MODIFY_RETURN, and `bpf_loop` (Linux 5.17) for the
//! path walk. Declared `fexit` for aya-obj's parser and loaded as fmod_ret
//! by chaos's own loader (chaos-user/src/attach/fmod_ret.rs), like the
//! fault programs, so the probe goes through the same code. Returns 0: the
//! function runs as usual if it fires.
use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_loop, macros::fexit, programs::FExitContext};

#[fexit(function = "security_file_open")]
pub fn probe_fmod_ret(_ctx: FExitContext) -> i32 {
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
