//! I/O faults on reads and writes where the `bpf` LSM is not active: an
//! fmod_ret program on `security_file_permission`, which rw_verify_area()
//! (fs/read_write.c), iterate_dir() and vfs_fallocate() call as they call
//! the LSMs' `file_permission` hook (see `io_rw` for the calls it covers).
//! Non-zero skips the function and fails the call with that `-errno`
//! before any byte moves; 0 lets it run. In an `fexit/` section for aya-obj's
//! parser, loaded as BPF_MODIFY_RETURN by chaos: see `io_fmod_open`.

use core::ffi::c_void;

use aya_ebpf::programs::FExitContext;

use crate::io::{CURRENT, Call, decide, refusal};

// Not aya's `#[fexit]`: its entry point returns 0 whatever the program
// returns (an fexit program must), and the value is the point here.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_file_permission")]
pub fn io_fmod_rw(ctx: *mut c_void) -> i32 {
    try_io_fmod_rw(FExitContext::new(ctx))
}

fn try_io_fmod_rw(ctx: FExitContext) -> i32 {
    // int security_file_permission(struct file *file, int mask), then the
    // previous fmod_ret programs' value.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return refusal(previous);
    }
    decide(ctx.arg::<u64>(0), Call::Permission(ctx.arg::<i32>(1)), CURRENT)
}
