//! A BPF LSM program on `file_open`: needs trampolines and `bpf` among the
//! active LSMs. Returns 0 (allow), so it changes nothing if it fires.
use aya_ebpf::{macros::lsm, programs::LsmContext};

#[lsm(hook = "file_open")]
pub fn probe_lsm(_ctx: LsmContext) -> i32 {
    0
}
