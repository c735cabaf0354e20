//! An fmod_ret program on `security_file_open`, as io-error's fmod_ret
//! programs are (chaos-ebpf/src/io_fmod_open.rs): needs trampolines and
//! BPF_MODIFY_RETURN (Linux 5.7). Declared `fexit` for aya-obj's parser and
//! loaded as fmod_ret by chaos's own loader
//! (chaos-user/src/attach/fmod_ret.rs), like the fault programs, so the
//! probe goes through the same code. Returns 0: the function runs as usual
//! if it fires.
use aya_ebpf::{macros::fexit, programs::FExitContext};

#[fexit(function = "security_file_open")]
pub fn probe_fmod_ret(_ctx: FExitContext) -> i32 {
    0
}
