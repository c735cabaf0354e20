//! Clock skew, system call path: the entry of `time(2)` (the
//! `syscalls/sys_enter_time` tracepoint). Only what the call stores through
//! `tloc` can be shifted: its return value is a register, which no
//! tracepoint program can change (that needs bpf_override_return, i.e.
//! CONFIG_BPF_KPROBE_OVERRIDE, which Debian's kernels lack, or an fmod_ret
//! program on the system call, which `chaos doctor` finds on Debian's 7.2
//! only and aya cannot load). glibc's `time()` is this system call in a
//! process without vDSO.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use chaos_abi::clock::KIND_TIME;

use crate::clock::syscall_enter;

#[tracepoint]
pub fn clock_enter_time(ctx: TracePointContext) -> u32 {
    // int __syscall_nr at 8, __kernel_old_time_t *tloc at 16.
    // SAFETY: offsets inside the record.
    let (Ok(nr), Ok(tloc)) = (unsafe { (ctx.read_at::<i32>(8), ctx.read_at::<u64>(16)) }) else {
        return 0;
    };
    syscall_enter(nr, KIND_TIME, 0, tloc);
    0
}
