//! `io_fmod_rw` for kernels without `bpf_loop`: the path walk as a bounded
//! loop (see `io_bounded_open`).

use core::ffi::c_void;

use aya_ebpf::programs::FExitContext;

use crate::io::{BEFORE_BPF_LOOP, Call, decide, refusal};

#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_file_permission")]
pub fn io_bounded_rw(ctx: *mut c_void) -> i32 {
    try_io_bounded_rw(FExitContext::new(ctx))
}

fn try_io_bounded_rw(ctx: FExitContext) -> i32 {
    // As io_fmod_rw.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return refusal(previous);
    }
    decide(ctx.arg::<u64>(0), Call::Permission(ctx.arg::<i32>(1)), BEFORE_BPF_LOOP)
}
