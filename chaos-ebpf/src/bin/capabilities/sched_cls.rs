//! tc classifier: attached through TCX and through netlink (clsact).
use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};

#[classifier]
pub fn probe_sched_cls(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}
