//! Clock skew: one [`ClockRule`] per target cgroup, counters per slot, the
//! calls in flight between their entry and exit hooks, and the kernel facts
//! the exec program needs (field offsets of `struct linux_binprm`).
//!
//! Three hooks write the shifted time into the caller's memory with
//! `bpf_probe_write_user`:
//! - the system calls `clock_gettime`, `gettimeofday` and `time` (syscall
//!   tracepoints: the entry remembers where the result goes, the exit adds
//!   the offset to what the kernel wrote there);
//! - `exec` (the `sched_process_exec` tracepoint): a process started in the
//!   target gets its vDSO detached — the `AT_SYSINFO_EHDR` entry of its
//!   auxiliary vector becomes `AT_IGNORE` — so that its C library (glibc,
//!   musl, a static one, Go's runtime) reads clocks through system calls,
//!   which the first hook shifts;
//! - the C library's `clock_gettime` in processes that were already running
//!   when the attack started (uprobe and uretprobe, per process).

use crate::cgroup::Levels;

/// `HashMap<u64 /* cgroup id */, ClockRule>`.
pub const RULES: &str = "CLOCK_RULES";
/// `Array<ClockConfig>` with one entry.
pub const CONFIG: &str = "CLOCK_CONFIG";
/// `PerCpuArray<ClockCounters>`, indexed by [`ClockRule::slot`].
pub const COUNTERS: &str = "CLOCK_COUNTERS";
/// `LruHashMap<u64 /* pid_tgid */, ClockPending>`: system calls of the
/// target between their entry and exit tracepoints.
pub const PENDING_SYSCALL: &str = "CLOCK_PENDING_SYSCALL";
/// `LruHashMap<u64 /* pid_tgid */, ClockPending>`: C library calls of the
/// target between their uprobe and uretprobe.
pub const PENDING_LIBC: &str = "CLOCK_PENDING_LIBC";

/// Maximum number of target cgroups with a clock rule at once.
pub const MAX_RULES: u32 = 1024;
/// Counter slots: the injector's slot numbers are shared by every family.
pub const MAX_SLOTS: u32 = crate::net::MAX_SLOTS;
/// Calls in flight at once (threads inside a clock call). LRU: a thread
/// that died between entry and exit leaves an entry that is evicted later.
pub const MAX_PENDING: u32 = 4096;

/// Clock ids (include/uapi/linux/time.h).
pub const CLOCK_REALTIME: u32 = 0;
pub const CLOCK_REALTIME_COARSE: u32 = 5;
pub const CLOCK_REALTIME_ALARM: u32 = 8;
pub const CLOCK_TAI: u32 = 11;

/// [`ClockRule::clocks`] bit for the calls that read the wall clock without
/// a clock id: `gettimeofday` and `time`. Clock id bits are `1 << id`.
pub const WALL_CALLS: u32 = 1 << 31;

/// [`ClockRule::flags`]: detach the vDSO of processes exec'ed in the target.
pub const FLAG_DETACH_VDSO: u32 = 1 << 0;

/// [`ClockPending::kind`]: a `struct timespec` (`clock_gettime`).
pub const KIND_TIMESPEC: u32 = 0;
/// [`ClockPending::kind`]: a `struct timeval` (`gettimeofday`).
pub const KIND_TIMEVAL: u32 = 1;
/// [`ClockPending::kind`]: a `time_t` (`time`).
pub const KIND_TIME: u32 = 2;

/// Auxiliary vector tags (include/uapi/linux/auxvec.h).
pub const AT_NULL: u64 = 0;
pub const AT_IGNORE: u64 = 1;
pub const AT_SYSINFO_EHDR: u64 = 33;
/// Entries of the auxiliary vector the exec program looks at. x86-64 puts
/// `AT_SYSINFO_EHDR` first (ARCH_DLINFO, arch/x86/include/asm/elf.h, comes
/// before the generic entries in create_elf_tables, fs/binfmt_elf.c); the
/// whole vector has fewer than AT_VECTOR_SIZE (~50) words.
pub const MAX_AUXV: u32 = 24;

pub const NSEC_PER_SEC: u64 = 1_000_000_000;

/// A clock skew on one cgroup subtree.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockRule {
    /// `bpf_ktime_get_ns()` from which the rule is inert.
    pub deadline_ns: u64,
    /// The offset is `offset_sec + offset_nsec / 10^9` seconds, with
    /// `offset_nsec` in `[0, 10^9)`: -1.5 s is `-2` and `500_000_000`.
    pub offset_sec: i64,
    pub offset_nsec: u64,
    /// Bit `1 << id` per shifted clock id, plus [`WALL_CALLS`].
    pub clocks: u32,
    /// [`FLAG_DETACH_VDSO`].
    pub flags: u32,
    /// Index into [`COUNTERS`].
    pub slot: u32,
    pub _pad: u32,
}

/// Byte offsets of `struct linux_binprm` fields (include/linux/binfmts.h),
/// from the running kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BinprmOffsets {
    /// `unsigned long p`: after create_elf_tables, the new program's stack
    /// pointer, which points at `argc`.
    pub p: u32,
    /// `int argc`.
    pub argc: u32,
    /// `int envc`.
    pub envc: u32,
    pub _pad: u32,
}

/// What every hook reads first: one lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockConfig {
    /// The cgroup levels of [`RULES`]' keys; `mask == 0`: no rule at all.
    pub levels: Levels,
    pub binprm: BinprmOffsets,
    /// CLOCK_TAI minus CLOCK_REALTIME when the loader started, in ns (whole
    /// seconds; 0 where no one set the kernel's TAI offset): the fmod_ret
    /// program on `time(2)` reads the wall clock as `bpf_ktime_get_tai_ns()`
    /// minus this, since no helper reads CLOCK_REALTIME.
    pub tai_offset_ns: u64,
}

/// A call between its entry and its exit hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockPending {
    /// Where the result goes, in the caller's memory.
    pub ptr: u64,
    /// `KIND_*`.
    pub kind: u32,
    /// The system call number (the exit tracepoint checks it); 0 for C
    /// library calls.
    pub nr: u32,
}

/// Per-CPU counters of one attack. The loader sums them over CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockCounters {
    /// Clock system calls of the target on a shifted clock.
    pub syscall_matched: u64,
    /// ... whose result was shifted.
    pub syscall_shifted: u64,
    /// `time(2)` system calls of the target whose return value is the
    /// kernel's, unshifted (fexit and tracepoints cannot change it; only
    /// what they store through their pointer argument is shifted). 0 where
    /// the fmod_ret program answers `time(2)` itself.
    pub time_return_unshifted: u64,
    /// C library `clock_gettime` calls on a shifted clock (uprobes).
    pub libc_matched: u64,
    /// ... whose result was shifted.
    pub libc_shifted: u64,
    /// Programs exec'ed in the target.
    pub execs: u64,
    /// ... whose vDSO was detached.
    pub vdso_detached: u64,
    /// ... whose initial stack did not have the 64-bit layout (32-bit
    /// programs): left alone.
    pub exec_unrecognised: u64,
    /// `bpf_probe_write_user` or a read of the caller's memory failed: the
    /// read was left unshifted.
    pub write_failed: u64,
    /// Events that found the rule past its deadline and were passed.
    pub expired: u64,
}

const _: () = assert!(core::mem::size_of::<ClockRule>() == 40);
const _: () = assert!(core::mem::align_of::<ClockRule>() == 8);
const _: () = assert!(core::mem::size_of::<BinprmOffsets>() == 16);
const _: () = assert!(core::mem::size_of::<ClockConfig>() == 32);
const _: () = assert!(core::mem::size_of::<ClockPending>() == 16);
const _: () = assert!(core::mem::size_of::<ClockCounters>() == 80);

crate::pod!(ClockRule, ClockConfig, ClockPending, ClockCounters);
