//! Clock skew, system call path: the exit of `clock_gettime`,
//! `gettimeofday` and `time` (one program on the three
//! `syscalls/sys_exit_*` tracepoints). When the entry remembered a result
//! pointer for this thread and the call succeeded, the offset is added to
//! what the kernel wrote there, before the caller sees it.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::clock::syscall_exit;

#[tracepoint]
pub fn clock_exit(ctx: TracePointContext) -> u32 {
    // int __syscall_nr at 8, long ret at 16 (events/syscalls/sys_exit_*/format).
    // SAFETY: offsets inside the record.
    let (Ok(nr), Ok(ret)) = (unsafe { (ctx.read_at::<i32>(8), ctx.read_at::<i64>(16)) }) else {
        return 0;
    };
    syscall_exit(nr, ret);
    0
}
