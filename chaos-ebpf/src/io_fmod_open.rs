//! I/O faults on opens where the `bpf` LSM is not active (not in the
//! `lsm=` list, Ubuntu's default): an fmod_ret program on
//! `security_file_open`, the function do_dentry_open() (fs/open.c) calls
//! for every open but `O_PATH`, which runs every active LSM's `file_open`
//! hook. A BPF_MODIFY_RETURN program runs before it; returning non-zero
//! skips the function and makes its result `-errno`, so the open fails as
//! it would by `io_open`'s refusal (kernel/bpf/trampoline.c,
//! invoke_bpf_mod_ret; any `security_*` function may be the target:
//! kernel/bpf/verifier.c, check_attach_modify_return). Returning 0 lets the
//! function, and with it every LSM, run as usual.
//!
//! aya-obj parses no `fmod_ret/` section, so the entry point is in an
//! `fexit/` section for the object's parser; chaos loads it itself as
//! BPF_MODIFY_RETURN (chaos-user/src/attach/fmod_ret.rs). Loaded as an
//! fexit program it would be refused (an fexit program must return 0:
//! check_return_code), never run.

use core::ffi::c_void;

use aya_ebpf::programs::FExitContext;

use crate::io::{CURRENT, Call, decide, refusal};

// Not aya's `#[fexit]`: its entry point returns 0 whatever the program
// returns (an fexit program must), and the value is the point here.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_file_open")]
pub fn io_fmod_open(ctx: *mut c_void) -> i32 {
    try_io_fmod_open(FExitContext::new(ctx))
}

fn try_io_fmod_open(ctx: FExitContext) -> i32 {
    // int security_file_open(struct file *file), then the value the
    // fmod_ret programs before this one returned: never undo their refusal.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return refusal(previous);
    }
    decide(ctx.arg::<u64>(0), Call::Open, CURRENT)
}
