//! Clock skew, system call path, where the kernel has BPF trampolines: an
//! fexit program on `__x64_sys_time`, the x86-64 entry of time(2)
//! (SYSCALL_DEFINE, include/linux/syscalls.h). It runs when the system
//! call returns, with its result in the caller's memory, and shifts it (see
//! `clock::syscall_return`). Only this system call pays for it; the
//! tracepoint fallback (`clock_enter_*`, `clock_exit`) slows every system
//! call on the machine a little (TIF_SYSCALL_TRACEPOINT).

use aya_ebpf::{macros::fexit, programs::FExitContext};
use chaos_abi::clock::KIND_TIME;

use crate::clock::syscall_return;

#[fexit(function = "__x64_sys_time")]
pub fn clock_fexit_time(ctx: FExitContext) -> i32 {
    // long __x64_sys_time(const struct pt_regs *regs), then its return value
    // (the trampoline passes the arguments, then the result, as u64s).
    let regs: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    syscall_return(KIND_TIME, regs, ret);
    0
}
