//! The fmod_ret probe: can a BPF trampoline program replace the return
//! value of a kernel function here?
//!
//! `BPF_MODIFY_RETURN` programs attach to two kinds of functions
//! (kernel/bpf/verifier.c, `check_attach_modify_return`): every `security_*`
//! function, whatever LSMs are active — so io-error fails `open(2)` and
//! `read(2)` through `security_file_open` and `security_file_permission`
//! where `bpf` is not in the `lsm=` list (Ubuntu's default, this CI host) —
//! and the functions on the error-injection list, system calls among them
//! (CONFIG_FUNCTION_ERROR_INJECTION; clock-skew could then replace
//! `time(2)`'s return value). Debian's 7.2 accepts a system call without
//! that option, its 5.10 to 6.12 do not: measured, not assumed.
//!
//! aya 0.16 cannot load such a program; chaos's own loader
//! (crate::attach::fmod_ret) does. Two capabilities, each probed by
//! attaching and detaching at once: `fmod_ret`, a program on the security
//! hook (whether io-error's path walk may use `bpf_loop` is the `bpf_loop`
//! capability's question); and
//! `fmod_ret on system calls`, a program on `time(2)` that reads CLOCK_TAI
//! as clock-skew's does, then returns 0 (the function runs as usual).

use std::mem;

use aya_obj::generated::bpf_insn;

use crate::attach::fmod_ret;

/// The function io-error would replace.
const SECURITY_HOOK: &str = "security_file_open";
/// The system call clock-skew answers (x86-64's wrapper name), on the
/// error-injection list when the kernel has one.
#[cfg(target_arch = "x86_64")]
const SYSCALL: &str = "__x64_sys_time";
#[cfg(target_arch = "aarch64")]
const SYSCALL: &str = "__arm64_sys_time";

/// `call bpf_ktime_get_tai_ns; r0 = 0; exit`, encoded (include/uapi/linux/
/// bpf.h: BPF_JMP | BPF_CALL = 0x85 with the helper's number, 208, as the
/// immediate; BPF_ALU64 | BPF_MOV | BPF_K = 0xb7; BPF_JMP | BPF_EXIT =
/// 0x95). A kernel before 6.1 refuses the helper ("unknown func").
const READ_TAI_RETURN_ZERO: [u64; 3] = [0x0000_00d0_0000_0085, 0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];

pub fn probe() -> Result<String, String> {
    // io-error's use: a program on the hook, by the loader it uses.
    let ebpf = crate::ebpf::load_capabilities().map_err(|e| e.to_string())?;
    fmod_ret::attach(&ebpf, crate::ebpf::capabilities_object(), "probe_fmod_ret", SECURITY_HOOK)
        .map_err(|e| format!("{SECURITY_HOOK}: {e}"))?;
    Ok(format!("attached to {SECURITY_HOOK}"))
}

/// Can clock-skew answer `time(2)`: an fmod_ret program on the system call
/// that reads CLOCK_TAI.
pub fn probe_syscall() -> Result<String, String> {
    let btf = crate::btf::kernel().map_err(|e| format!("no usable kernel BTF: {e}"))?;
    let id = btf.func_id(SYSCALL).ok_or_else(|| format!("{SYSCALL} is not in the kernel's BTF"))?;
    // SAFETY: bpf_insn is a repr(C) struct of 8 bytes (code, registers,
    // offset, immediate), the encoding of each u64 above.
    let insns: [bpf_insn; 3] = unsafe { mem::transmute(READ_TAI_RETURN_ZERO) };
    let prog = fmod_ret::load(&insns, id, "chaos_probe", None).map_err(|e| {
        if e.contains("not modifiable") {
            format!("{SYSCALL}: {e} (system calls are modifiable with CONFIG_FUNCTION_ERROR_INJECTION)")
        } else if e.contains("unknown func") {
            format!("{SYSCALL}: {e} (bpf_ktime_get_tai_ns: Linux 6.1)")
        } else {
            format!("{SYSCALL}: {e}")
        }
    })?;
    let _link = fmod_ret::link(&prog)?;
    Ok(format!("attached to {SYSCALL}, reading CLOCK_TAI"))
}
