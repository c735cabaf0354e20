//! What the I/O fault programs share: calibration, finding the caller's
//! rule, classifying the call, matching its path, and the failure decision
//! with its counters. Every error along the way lets the call through.

pub mod path;

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_ktime_get_ns};
use chaos_abi::io::{
    IDX_OPEN, IDX_READ, IDX_READDIR, IDX_WRITE, IoCalibration, IoCounters, IoOffsets, IoRule,
    MAX_LISTED_TARGETS, N_OPS, OP_OPEN, OP_READ, OP_READDIR, OP_WRITE, TARGETS_UNLISTED,
};

use self::path::{Walk, read_u16, read_u64};
use crate::{
    cgroup::{current_ancestor, find_rule},
    maps::{IO_CALIBRATION, IO_CALLS, IO_CONFIG, IO_COUNTERS, IO_RULES},
};

/// `mask` bits of the `file_permission` hook (include/linux/fs.h).
pub const MAY_WRITE: i32 = 0x2;
pub const MAY_READ: i32 = 0x4;

/// `i_mode` file type bits (include/uapi/linux/stat.h).
const S_IFMT: u16 = 0o170_000;
const S_IFDIR: u16 = 0o040_000;

/// The call a hook saw.
#[derive(Clone, Copy)]
pub enum Call {
    /// `file_open`: every open except `O_PATH` (do_dentry_open, fs/open.c).
    Open,
    /// `file_permission` with its `mask`: before reads and writes
    /// (rw_verify_area, fs/read_write.c), directory reads (iterate_dir,
    /// fs/readdir.c), fallocate (vfs_fallocate, fs/open.c) and clone or
    /// dedupe ranges (fs/remap_range.c).
    Permission(i32),
}

/// How a program walks a path: [`path::walk`] or [`path::walk_bounded`].
pub type Walker = fn(u64, u64, &IoOffsets, &IoRule) -> Walk;

/// What the kernel a program is built for offers.
#[derive(Clone, Copy)]
pub struct Kernel {
    pub walk: Walker,
    /// Atomic fetch-and-add (Linux 5.12), which call windows (`--after`,
    /// `--first`) count with. Without it the planner refuses windows, and
    /// a rule with one is passed (never reached: fail open).
    pub atomic_fetch: bool,
}

/// bpf_loop (5.17), and with it atomic fetch (5.12).
pub const CURRENT: Kernel = Kernel { walk: path::walk, atomic_fetch: true };
/// Before bpf_loop: a kernel of 5.10 may lack both.
pub const BEFORE_BPF_LOOP: Kernel = Kernel { walk: path::walk_bounded, atomic_fetch: false };

/// Decide for one call on `file` (a `struct file *`): 0 to let it through,
/// `-errno` to fail it.
#[inline(always)]
pub fn decide(file: u64, call: Call, kernel: Kernel) -> i32 {
    let Some(config) = IO_CONFIG.get(0) else { return 0 };
    let calibrating = config.calibrate_pid_tgid;
    if calibrating != 0 && matches!(call, Call::Open) && bpf_get_current_pid_tgid() == calibrating {
        calibrate(file, &config.offsets, calibrating);
        return 0;
    }
    if config.levels.mask == 0 {
        return 0;
    }
    // An ancestor that is none of the listed targets is reported as "no
    // cgroup" (0), which find_rule skips without a hash lookup: a call of
    // another cgroup costs one helper call and a few compares per targeted
    // level.
    let listed = config.n_targets != TARGETS_UNLISTED;
    // Inlined into find_rule's loop: 5.10's verifier, finding the same
    // subprogram state twice in one path (the loop's level counter is not
    // precise), would call the loop infinite.
    let ancestor = #[inline(always)]
    |level| {
        let id = current_ancestor(level);
        if !listed || is_listed(&config.targets, id) { id } else { 0 }
    };
    let Some(rule) = find_rule(&IO_RULES, &config.levels, ancestor) else { return 0 };
    let rule: IoRule = *rule;
    let off: IoOffsets = config.offsets;
    let Some(counters) = IO_COUNTERS.get_ptr_mut(rule.slot) else { return 0 };
    // SAFETY: a per-CPU slot; BPF programs run with migration disabled, so
    // nothing else on this CPU touches it while we do.
    let counters: &mut IoCounters = unsafe { &mut *counters };

    // The kernel-side deadline: from here on the rule is inert, whatever
    // the loader does.
    // SAFETY: helper without arguments.
    if unsafe { bpf_ktime_get_ns() } >= rule.deadline_ns {
        counters.expired += 1;
        return 0;
    }

    let Some(dentry) = read_u64(file, off.file_dentry) else { return 0 };
    let Some(vfsmnt) = read_u64(file, off.file_mnt) else { return 0 };
    let Some(inode) = read_u64(dentry, off.dentry_inode) else { return 0 };
    // A file whose inode is not its dentry's is the kernel's own file below
    // a stacking filesystem: overlayfs opens the real file "with a fake
    // path" (the overlay's; open_with_fake_path, fs/open.c, up to Linux
    // 6.5). The overlay file the program opened was decided on already;
    // deciding again would fail the call twice as often.
    if read_u64(file, off.file_inode) != Some(inode) {
        return 0;
    }
    let idx = match call {
        Call::Open => IDX_OPEN,
        Call::Permission(mask) if mask & MAY_WRITE != 0 => IDX_WRITE,
        Call::Permission(mask) if mask & MAY_READ != 0 => {
            if rule.ops & (OP_READ | OP_READDIR) == 0 {
                return 0;
            }
            let Some(mode) = read_u16(inode, off.inode_mode) else { return 0 };
            if mode & S_IFMT == S_IFDIR { IDX_READDIR } else { IDX_READ }
        }
        Call::Permission(_) => return 0,
    };
    let bit = match idx {
        IDX_OPEN => OP_OPEN,
        IDX_READ => OP_READ,
        IDX_WRITE => OP_WRITE,
        _ => OP_READDIR,
    };
    if rule.ops & bit == 0 {
        return 0;
    }
    match (kernel.walk)(dentry, vfsmnt, &off, &rule) {
        Walk::Match => {}
        Walk::NoMatch => return 0,
        Walk::Unresolved => {
            counters.unresolved += 1;
            return 0;
        }
    }
    if idx >= N_OPS {
        return 0;
    }
    counters.matched[idx] += 1;

    // A constant once inlined: without atomic fetch the instruction is
    // never emitted (5.10's verifier refuses it wherever it is).
    let windowed = rule.window_start != 0 || rule.window_end != u64::MAX;
    if windowed && (!kernel.atomic_fetch || !in_window(&rule)) {
        return 0;
    }
    // SAFETY: helper without arguments.
    let roll = u64::from(unsafe { bpf_get_prandom_u32() });
    if roll >= rule.threshold {
        return 0;
    }
    // Not `rule.errno[idx]`: the compiler addresses a stack array with a
    // variable index by OR-ing it into the frame pointer, which the
    // verifier refuses ("bitwise operator |= on pointer prohibited").
    let errnos = rule.errno;
    let packed = u64::from(errnos[0])
        | (u64::from(errnos[1]) << 16)
        | (u64::from(errnos[2]) << 32)
        | (u64::from(errnos[3]) << 48);
    let errno = ((packed >> (16 * idx as u64)) & 0xffff) as i32;
    // The verifier wants an LSM program's return value provably in
    // [-MAX_ERRNO, 0] (check_return_code, kernel/bpf/verifier.c, since
    // Linux 6.8); the loader only writes errnos from 1 to 133.
    if errno == 0 || errno > MAX_ERRNO {
        return 0;
    }
    counters.failed[idx] += 1;
    negative_errno(errno as u64)
}

/// include/linux/err.h.
const MAX_ERRNO: i32 = 4095;

/// What to return when a BPF LSM program that ran before ours on the same
/// hook refused the call (`previous`, the hook's last argument): that
/// refusal, unchanged — never undo another program's decision. Bounded for
/// the verifier (see `decide`); the kernel only hands us values in range.
#[inline(always)]
pub fn refusal(previous: i32) -> i32 {
    // EPERM for a value out of range (which the kernel never hands us).
    let errno = if (-MAX_ERRNO..0).contains(&previous) { previous.wrapping_neg() } else { 1 };
    negative_errno(errno as u64)
}

/// `-errno` for an errno in 1..=4095, computed so that the verifier can
/// bound the result in every kernel version.
///
/// The verifier checks all 64 bits of R0, but the compiler treats an `i32`
/// return value as 32 bits: a negative constant is returned zero-extended
/// (0xffffffff for -1), and a range check may sit on a 32-bit copy of the
/// register it returns. Older verifiers do not track `BPF_NEG` either. So: mask to 12 bits (the result
/// is in [0, 4095] by the mask alone), then negate as `~x + 1`, which the
/// verifier follows through XOR (tnum) and ADD: the result is in [-4095, 0].
#[inline(always)]
fn negative_errno(errno: u64) -> i32 {
    let mut r = errno;
    // SAFETY: register arithmetic only.
    unsafe {
        core::arch::asm!(
            "{r} &= 4095",
            "{r} ^= -1",
            "{r} += 1",
            r = inout(reg) r,
            options(pure, nomem, nostack),
        );
    }
    r as i32
}

#[inline(always)]
fn is_listed(targets: &[u64; MAX_LISTED_TARGETS], id: u64) -> bool {
    let mut i = 0;
    while i < MAX_LISTED_TARGETS {
        if targets[i] == id {
            return true;
        }
        i += 1;
    }
    false
}

/// Number this matching call (atomically across CPUs: "the first N calls"
/// means N calls, however many CPUs make them) and say whether its number
/// is in the rule's window.
#[inline(always)]
fn in_window(rule: &IoRule) -> bool {
    let Some(calls) = IO_CALLS.get_ptr_mut(rule.slot) else { return false };
    // SAFETY: an 8-byte aligned u64 in map memory that lives as long as the
    // program; every access to it is atomic (the loader only resets it
    // before the rule exists).
    let n = unsafe { fetch_add(calls, 1) };
    n >= rule.window_start && n < rule.window_end
}

/// Atomically add `v` to `*ptr`, returning the previous value.
///
/// The BPF ISA has had atomic fetch-and-add since Linux 5.12
/// (`BPF_ATOMIC | BPF_FETCH`), but LLVM only selects it for CPU v3, and the
/// objects are built for `generic` (aya-build passes no target-cpu):
/// `AtomicU64::fetch_add` does not exist on this target and the intrinsic
/// fails with "Invalid usage of the XADD return value". So: one instruction
/// of inline assembly.
///
/// # Safety
/// `ptr` must be valid, 8-byte aligned, and only accessed atomically.
#[inline(always)]
unsafe fn fetch_add(ptr: *mut u64, v: u64) -> u64 {
    let mut v = v;
    // SAFETY: per the caller's contract.
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) ptr,
            v = inout(reg) v,
            options(nostack),
        );
    }
    v
}

/// Report the inode of the loader's calibration open: the first file the
/// kernel opens for it (on overlayfs, the overlay file; the real file it
/// opens next is not the one programs see).
#[inline(always)]
fn calibrate(file: u64, off: &IoOffsets, pid_tgid: u64) {
    let Some(slot) = IO_CALIBRATION.get_ptr_mut(0) else { return };
    // SAFETY: the single entry of an array map; only the loader's own
    // calibration open (one thread, one open at a time) writes it, and the
    // loader zeroes it before each.
    if unsafe { (*slot).pid_tgid } != 0 {
        return;
    }
    let Some(dentry) = read_u64(file, off.file_dentry) else { return };
    let Some(inode) = read_u64(dentry, off.dentry_inode) else { return };
    let mode = read_u16(inode, off.inode_mode).unwrap_or(0);
    // SAFETY: as above.
    unsafe { *slot = IoCalibration { pid_tgid, inode, mode: u32::from(mode), _pad: 0 } };
}
