//! I/O faults on opens: a BPF LSM program on `file_open`, which the kernel
//! calls from do_dentry_open() (fs/open.c) for every open except `O_PATH`
//! — open, openat, openat2, creat, and the opens execve and uselib make —
//! after the path was resolved, permissions checked and, with `O_CREAT`, a
//! new file created. Returning `-errno` fails the open with that errno.
//!
//! The same program answers the loader's calibration opens (see
//! chaos_abi::io).

use aya_ebpf::{macros::lsm, programs::LsmContext};

use crate::io::{CURRENT, Call, decide, refusal};

#[lsm(hook = "file_open")]
pub fn io_open(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, file_open, struct file *file), plus the return value
    // of the BPF LSM program that ran before us on this hook: never undo
    // another program's refusal.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return refusal(previous);
    }
    decide(ctx.arg::<u64>(0), Call::Open, CURRENT)
}
