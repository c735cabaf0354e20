//! The fmod_ret probe: can a BPF trampoline program replace the return
//! value of a kernel function here?
//!
//! `BPF_MODIFY_RETURN` programs attach to two kinds of functions
//! (kernel/bpf/verifier.c, `check_attach_modify_return`): every `security_*`
//! function, whatever LSMs are active — so io-error could fail `open(2)` and
//! `read(2)` through `security_file_open` and `security_file_permission`
//! where `bpf` is not in the `lsm=` list (Ubuntu's default, this CI host) —
//! and the functions on the error-injection list, system calls among them
//! (CONFIG_FUNCTION_ERROR_INJECTION; clock-skew could then replace
//! `time(2)`'s return value). Debian's 7.2 accepts a system call without
//! that option, its 5.10 to 6.12 do not: measured, not assumed.
//!
//! aya 0.16 cannot load such a program (aya/src/programs/mod.rs:
//! "BPF_MODIFY_RETURN (not supported yet in Aya)"), and its loader keeps
//! the attributes private, so the probe issues the two bpf(2) commands
//! itself with aya-obj's generated `bpf_attr`: a program of two
//! instructions (`r0 = 0; exit`: run the function as usual) loaded for
//! the function, then attached and detached at once. Nothing in chaos
//! injects through fmod_ret yet; `chaos doctor` says where it would work.

use std::{
    ffi::CString,
    mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use aya_obj::generated::{
    bpf_attach_type::BPF_MODIFY_RETURN, bpf_attr, bpf_cmd, bpf_prog_type::BPF_PROG_TYPE_TRACING,
};

/// The function io-error would replace.
const SECURITY_HOOK: &str = "security_file_open";
/// A system call (x86-64's wrapper name), on the error-injection list when
/// the kernel has one.
#[cfg(target_arch = "x86_64")]
const SYSCALL: &str = "__x64_sys_time";
#[cfg(target_arch = "aarch64")]
const SYSCALL: &str = "__arm64_sys_time";

/// `r0 = 0; exit`, encoded (include/uapi/linux/bpf.h: BPF_ALU64 | BPF_MOV |
/// BPF_K = 0xb7, BPF_JMP | BPF_EXIT = 0x95).
const RETURN_ZERO: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];

pub fn probe() -> Result<String, String> {
    let btf = crate::btf::kernel().map_err(|e| format!("no usable kernel BTF: {e}"))?;
    let id =
        btf.func_id(SECURITY_HOOK).ok_or_else(|| format!("{SECURITY_HOOK} is not in the kernel's BTF"))?;
    attach(id).map_err(|e| format!("{SECURITY_HOOK}: {e}"))?;
    let syscalls = match btf.func_id(SYSCALL).map(attach) {
        Some(Ok(())) => format!("and the system calls ({SYSCALL})"),
        Some(Err(e)) => format!("not the system calls ({SYSCALL}: {e})"),
        None => format!("not the system calls ({SYSCALL} is not in the kernel's BTF)"),
    };
    Ok(format!("attached to {SECURITY_HOOK}; {syscalls}"))
}

/// Load [`RETURN_ZERO`] as fmod_ret for the function of BTF id `btf_id`,
/// attach it, and let both fds close.
fn attach(btf_id: u32) -> Result<(), String> {
    let license = CString::new("GPL").expect("no NUL");
    let mut log = vec![0u8; 4096];
    // SAFETY: bpf_attr is a plain C union of integers; all zeroes is the
    // kernel's "unset" for every field it does not use (it checks that
    // the bytes past those it knows are zero).
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    // SAFETY: writing the BPF_PROG_LOAD member of the union.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = BPF_PROG_TYPE_TRACING as u32;
    load.expected_attach_type = BPF_MODIFY_RETURN as u32;
    load.attach_btf_id = btf_id;
    load.insns = RETURN_ZERO.as_ptr() as u64;
    load.insn_cnt = RETURN_ZERO.len() as u32;
    load.license = license.as_ptr() as u64;
    load.log_level = 1;
    load.log_buf = log.as_mut_ptr() as u64;
    load.log_size = log.len() as u32;
    let prog = bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        crate::ebpf::load_failure(&e, &String::from_utf8_lossy(&log[..end]))
    })?;
    // SAFETY: as above, for BPF_RAW_TRACEPOINT_OPEN: with no name, it
    // attaches a tracing program where it was loaded for, and returns a
    // link fd (kernel/bpf/syscall.c, bpf_raw_tp_link_attach).
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    attr.raw_tracepoint.prog_fd = prog.as_raw_fd() as u32;
    let _link = bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr)
        .map_err(|e| format!("loaded, but attaching failed: {e}"))?;
    Ok(())
}

/// bpf(2) for a command that returns a new fd.
fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid bpf_attr of the size passed; the pointers
    // in it (instructions, license, log) outlive the call.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, cmd as libc::c_int, attr as *mut bpf_attr, mem::size_of::<bpf_attr>())
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}
