//! I/O faults on reads and writes: a BPF LSM program on `file_permission`,
//! which the kernel calls from rw_verify_area() (fs/read_write.c) before
//! every read, write, readv, writev, pread, pwrite, preadv, pwritev,
//! sendfile, splice and copy_file_range (io_uring and AIO reads and writes
//! too), with MAY_READ or MAY_WRITE; from iterate_dir() (getdents) with
//! MAY_READ on a directory; from vfs_fallocate() with MAY_WRITE; and from
//! the clone/dedupe range calls. Returning `-errno` fails the call before
//! any byte moves.

use aya_ebpf::{macros::lsm, programs::LsmContext};

use crate::io::{CURRENT, Call, decide, refusal};

#[lsm(hook = "file_permission")]
pub fn io_rw(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, file_permission, struct file *file, int mask), plus
    // the previous BPF LSM program's return value.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return refusal(previous);
    }
    decide(ctx.arg::<u64>(0), Call::Permission(ctx.arg::<i32>(1)), CURRENT)
}
