//! `clock_libc_return` as a uretprobe_multi program (see
//! `clock_libc_enter_multi`).

use aya_ebpf::{macros::uretprobe, programs::RetProbeContext};

use crate::clock::libc_return;

#[uretprobe(multi)]
pub fn clock_libc_return_multi(ctx: RetProbeContext) -> u32 {
    libc_return(ctx.ret::<i32>());
    0
}
