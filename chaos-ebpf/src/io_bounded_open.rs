//! `io_fmod_open` for kernels without `bpf_loop` (before Linux 5.17, e.g.
//! Debian 11's 5.10): the same fmod_ret program on `security_file_open`,
//! with the path walk as a bounded loop of
//! [`MAX_DEPTH_BOUNDED`](chaos_abi::io::MAX_DEPTH_BOUNDED) steps. A
//! separate program, not a branch: a program that names `bpf_loop`'s
//! callback at all is refused by those kernels before any branch is
//! looked at (the callback is a BTF function they do not count as a
//! subprogram: "number of funcs in func_info doesn't match number of
//! subprogs", kernel/bpf/verifier.c, check_btf_func).

use core::ffi::c_void;

use aya_ebpf::programs::FExitContext;

use crate::io::{BEFORE_BPF_LOOP, Call, decide, refusal};

#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_file_open")]
pub fn io_bounded_open(ctx: *mut c_void) -> i32 {
    try_io_bounded_open(FExitContext::new(ctx))
}

fn try_io_bounded_open(ctx: FExitContext) -> i32 {
    // As io_fmod_open.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return refusal(previous);
    }
    decide(ctx.arg::<u64>(0), Call::Open, BEFORE_BPF_LOOP)
}
