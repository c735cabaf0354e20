//! ... and its uretprobe: when `clock_gettime` returns 0, the offset is
//! added to the `struct timespec` it filled, before its caller reads it.

use aya_ebpf::{macros::uretprobe, programs::RetProbeContext};

use crate::clock::libc_return;

#[uretprobe]
pub fn clock_libc_return(ctx: RetProbeContext) -> u32 {
    libc_return(ctx.ret::<i32>());
    0
}
