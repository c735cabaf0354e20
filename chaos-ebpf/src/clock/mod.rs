//! What the clock-skew programs share: finding the caller's rule, the
//! calls in flight, and adding the offset to a result in the caller's
//! memory. Every failure lets the call's result through unshifted.
//!
//! Shifting is done *after* the kernel or the vDSO wrote the true time, by
//! reading the result back from the caller's memory and writing the
//! shifted value over it with `bpf_probe_write_user` — the only way a BPF
//! program can change what a clock read returns. Kernel lockdown (integrity
//! or confidentiality) makes the verifier refuse that helper
//! (security_locked_down(LOCKDOWN_BPF_WRITE_USER) in
//! bpf_tracing_func_proto, kernel/trace/bpf_trace.c). A return value in a
//! register cannot be changed that way: `time(2)`'s is answered by an
//! fmod_ret program where the kernel allows one on system calls
//! ([`time_answer`]), and is left alone elsewhere.

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
    bpf_probe_write_user, generated::bpf_ktime_get_tai_ns,
};
use chaos_abi::clock::{
    AT_IGNORE, AT_NULL, AT_SYSINFO_EHDR, BinprmOffsets, ClockConfig, ClockCounters, ClockPending, ClockRule,
    KIND_TIME, KIND_TIMESPEC, KIND_TIMEVAL, MAX_AUXV, NSEC_PER_SEC, WALL_CALLS,
};

use crate::{
    cgroup::{current_ancestor, find_rule},
    maps::{CLOCK_CONFIG, CLOCK_COUNTERS, CLOCK_PENDING_LIBC, CLOCK_PENDING_SYSCALL, CLOCK_RULES},
};

/// The caller's rule, in force, and this CPU's counters for it.
pub struct Hit {
    pub rule: ClockRule,
    pub counters: *mut ClockCounters,
}

impl Hit {
    /// This CPU's counters of the rule's attack.
    #[inline(always)]
    pub fn counters(&mut self) -> &mut ClockCounters {
        // SAFETY: a per-CPU slot; BPF programs run with migration disabled,
        // so nothing else on this CPU touches it while we do.
        unsafe { &mut *self.counters }
    }

    /// Is this clock id (or, for `WALL_CALLS`, gettimeofday/time) shifted?
    #[inline(always)]
    pub fn shifts(&self, bit: u32) -> bool {
        self.rule.clocks & bit != 0
    }
}

/// The bit of a clock id in [`ClockRule::clocks`]; 0 for ids that are never
/// shifted (negative ids are per-process and per-thread CPU clocks).
#[inline(always)]
pub fn clock_bit(clock: i32) -> u32 {
    if (0..31).contains(&clock) { 1 << clock } else { 0 }
}

/// The bit a call of `kind` on `clock` needs.
#[inline(always)]
pub fn call_bit(kind: u32, clock: i32) -> u32 {
    if kind == KIND_TIMESPEC { clock_bit(clock) } else { WALL_CALLS }
}

/// The configuration, if any rule exists.
#[inline(always)]
pub fn config() -> Option<ClockConfig> {
    let config = *CLOCK_CONFIG.get(0)?;
    if config.levels.mask == 0 { None } else { Some(config) }
}

/// The rule of the current task's deepest targeted cgroup, if it is still
/// in force (past its deadline the event is counted and passed).
#[inline(always)]
pub fn lookup(config: &ClockConfig) -> Option<Hit> {
    let rule: ClockRule = *find_rule(&CLOCK_RULES, &config.levels, current_ancestor)?;
    let counters = CLOCK_COUNTERS.get_ptr_mut(rule.slot)?;
    let mut hit = Hit { rule, counters };
    // The kernel-side deadline: from here on the rule is inert, whatever
    // the loader does.
    // SAFETY: helper without arguments.
    if unsafe { bpf_ktime_get_ns() } >= rule.deadline_ns {
        hit.counters().expired += 1;
        return None;
    }
    Some(hit)
}

/// `config()` then `lookup()`.
#[inline(always)]
pub fn current() -> Option<Hit> {
    lookup(&config()?)
}

/// A clock system call's entry: remember where its result goes, if the
/// caller is targeted and reads a shifted clock.
#[inline(always)]
pub fn syscall_enter(nr: i32, kind: u32, clock: i32, ptr: u64) {
    let Some(mut hit) = current() else { return };
    if !hit.shifts(call_bit(kind, clock)) {
        return;
    }
    let key = bpf_get_current_pid_tgid();
    if !claim(&mut hit, key, kind, ptr) {
        return;
    }
    let pending = ClockPending { ptr, kind, nr: nr as u32 };
    // Fail open: a full map (evicting LRU) or an error leaves this call
    // unshifted.
    let _ = CLOCK_PENDING_SYSCALL.insert(&key, &pending, 0);
}

/// A clock system call's exit: shift what the kernel wrote.
#[inline(always)]
pub fn syscall_exit(nr: i32, ret: i64) {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: copied at once.
    let Some(pending) = (unsafe { CLOCK_PENDING_SYSCALL.get(&key) }).copied() else { return };
    let _ = CLOCK_PENDING_SYSCALL.remove(&key);
    if pending.nr as i32 != nr || ret < 0 {
        return;
    }
    // Looked up again: an attack that ended between entry and exit shifts
    // nothing more.
    let Some(mut hit) = current() else { return };
    shift_counted(&mut hit, pending.kind, pending.ptr);
}

/// Byte offsets of the first two system call arguments in x86-64's
/// `struct pt_regs` (arch/x86/include/asm/ptrace.h: r15, r14, r13, r12, bp,
/// bx, r11, r10, r9, r8, ax, cx, dx, si, di, ...): user registers saved at
/// entry, which clock system calls do not change.
const PT_REGS_DI: u64 = 14 * 8;
const PT_REGS_SI: u64 = 13 * 8;

/// A clock system call returned `ret`; `regs` is its `struct pt_regs *`
/// (the fexit path: arguments and result are both at hand, no entry hook).
#[inline(always)]
pub fn syscall_return(kind: u32, regs: u64, ret: i64) {
    if ret < 0 {
        return;
    }
    let Some(mut hit) = current() else { return };
    // clock_gettime(which_clock, tp); gettimeofday(tv, tz); time(tloc).
    let Some(first) = read_kernel::<u64>(regs + PT_REGS_DI) else { return };
    let (clock, ptr) = if kind == KIND_TIMESPEC {
        let Some(tp) = read_kernel::<u64>(regs + PT_REGS_SI) else { return };
        (first as i32, tp)
    } else {
        (0, first)
    };
    if !hit.shifts(call_bit(kind, clock)) {
        return;
    }
    if claim(&mut hit, bpf_get_current_pid_tgid(), kind, ptr) {
        shift_counted(&mut hit, kind, ptr);
    }
}

/// `EFAULT` (include/uapi/asm-generic/errno-base.h): what `time(2)` returns
/// when it cannot store through `tloc` (kernel/time/time.c).
const EFAULT: i64 = 14;

/// `time(2)` for a targeted caller, answered here (the fmod_ret program):
/// the shifted seconds, also stored through `tloc` when it is not NULL; 0
/// to let the system call run (not targeted, past the deadline, the wall
/// clock not shifted, or a read failed).
///
/// The wall clock is read as CLOCK_TAI minus the TAI offset the loader
/// measured (no helper reads CLOCK_REALTIME; ktime_get_clocktai is
/// ktime_get_real plus tk->tai_offset, kernel/time/timekeeping.c): exact
/// unless the offset changes during the attack (a leap second). The kernel
/// answers with the seconds of its last tick (ktime_get_real_seconds), so
/// the answer may run ahead of an unshifted one by a tick.
#[inline(always)]
pub fn time_answer(regs: u64) -> i64 {
    let Some(config) = config() else { return 0 };
    let Some(mut hit) = lookup(&config) else { return 0 };
    if !hit.shifts(WALL_CALLS) {
        return 0;
    }
    let Some(tloc) = read_kernel::<u64>(regs + PT_REGS_DI) else { return 0 };
    hit.counters().syscall_matched += 1;
    // SAFETY: helper without arguments.
    let real = unsafe { bpf_ktime_get_tai_ns() }.wrapping_sub(config.tai_offset_ns);
    // Unsigned division: signed division needs BPF cpu v4 (Linux 6.6).
    let (sec, _) = add(
        (real / NSEC_PER_SEC) as i64,
        (real % NSEC_PER_SEC) as i64,
        hit.rule.offset_sec,
        hit.rule.offset_nsec as i64,
        NSEC_PER_SEC as i64,
    );
    if tloc != 0 && !write(tloc, &sec) {
        hit.counters().write_failed += 1;
        return -EFAULT;
    }
    hit.counters().syscall_shifted += 1;
    sec
}

/// Claim a targeted clock system call for the system call hooks, and
/// count it; true if its result is in user memory at `ptr`.
///
/// Not claimed: a C library call we probe, with the same result pointer,
/// is in progress on this thread, so this is that call's own system call
/// (the vDSO could not serve that clock, or the process has none); its
/// uretprobe shifts the result, and shifting here too would add the offset
/// twice. Claimed without a pointer: `time(NULL)` returns its result in a
/// register only, which no hook can change.
#[inline(always)]
fn claim(hit: &mut Hit, pid_tgid: u64, kind: u32, ptr: u64) -> bool {
    // SAFETY: the value is read at once; entries are only ever replaced
    // whole.
    if let Some(p) = unsafe { CLOCK_PENDING_LIBC.get(&pid_tgid) }
        && p.ptr == ptr
    {
        return false;
    }
    let counters = hit.counters();
    counters.syscall_matched += 1;
    if kind == KIND_TIME {
        counters.time_return_unshifted += 1;
    }
    ptr != 0
}

/// Shift a system call's result at `ptr`, counting the outcome.
#[inline(always)]
fn shift_counted(hit: &mut Hit, kind: u32, ptr: u64) {
    if shift(&hit.rule, kind, ptr) {
        hit.counters().syscall_shifted += 1;
    } else {
        hit.counters().write_failed += 1;
    }
}

/// The C library's `clock_gettime(clock, tp)` is entered.
#[inline(always)]
pub fn libc_enter(clock: i32, ptr: u64) {
    let Some(mut hit) = current() else { return };
    if ptr == 0 || !hit.shifts(clock_bit(clock)) {
        return;
    }
    hit.counters().libc_matched += 1;
    let pending = ClockPending { ptr, kind: KIND_TIMESPEC, nr: 0 };
    let _ = CLOCK_PENDING_LIBC.insert(&bpf_get_current_pid_tgid(), &pending, 0);
}

/// ... and returns `ret`.
#[inline(always)]
pub fn libc_return(ret: i32) {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: copied at once.
    let Some(pending) = (unsafe { CLOCK_PENDING_LIBC.get(&key) }).copied() else { return };
    let _ = CLOCK_PENDING_LIBC.remove(&key);
    if ret != 0 {
        return;
    }
    let Some(mut hit) = current() else { return };
    if shift(&hit.rule, pending.kind, pending.ptr) {
        hit.counters().libc_shifted += 1;
    } else {
        hit.counters().write_failed += 1;
    }
}

/// Add the rule's offset to the result at `ptr` in the caller's memory.
#[inline(always)]
fn shift(rule: &ClockRule, kind: u32, ptr: u64) -> bool {
    match kind {
        KIND_TIMESPEC => {
            // struct __kernel_timespec { s64 tv_sec; long long tv_nsec; }
            let Ok(ts) = (unsafe { bpf_probe_read_user(ptr as *const [i64; 2]) }) else { return false };
            let (sec, nsec) =
                add(ts[0], ts[1], rule.offset_sec, rule.offset_nsec as i64, NSEC_PER_SEC as i64);
            write(ptr, &[sec, nsec])
        }
        KIND_TIMEVAL => {
            // struct __kernel_old_timeval { long tv_sec; long tv_usec; }
            let Ok(tv) = (unsafe { bpf_probe_read_user(ptr as *const [i64; 2]) }) else { return false };
            let usec = (rule.offset_nsec / 1000) as i64;
            let (sec, usec) = add(tv[0], tv[1], rule.offset_sec, usec, 1_000_000);
            write(ptr, &[sec, usec])
        }
        KIND_TIME => {
            let Ok(t) = (unsafe { bpf_probe_read_user(ptr as *const i64) }) else { return false };
            // Whole seconds: the fraction of the offset is rounded.
            let round = i64::from(rule.offset_nsec >= NSEC_PER_SEC / 2);
            write(ptr, &(t + rule.offset_sec + round))
        }
        _ => false,
    }
}

/// `(sec, frac) + (off_sec, off_frac)` with `frac` in `[0, unit)`.
#[inline(always)]
fn add(sec: i64, frac: i64, off_sec: i64, off_frac: i64, unit: i64) -> (i64, i64) {
    let mut sec = sec.wrapping_add(off_sec);
    let mut frac = frac + off_frac;
    if frac >= unit {
        frac -= unit;
        sec = sec.wrapping_add(1);
    }
    (sec, frac)
}

#[inline(always)]
fn write<T>(ptr: u64, value: &T) -> bool {
    // SAFETY: bpf_probe_write_user writes only into the current task's user
    // memory, and fails (never faults) on an address it cannot write.
    unsafe { bpf_probe_write_user(ptr as *mut T, value as *const T) }.is_ok()
}

/// What exec found on a new program's initial stack.
pub enum Exec {
    /// `AT_SYSINFO_EHDR` was turned into `AT_IGNORE`.
    Detached,
    /// The auxiliary vector has no `AT_SYSINFO_EHDR` (vdso=0).
    NoVdso,
    /// Not the 64-bit layout (a 32-bit program), or unreadable.
    Unrecognised,
    /// The write failed.
    WriteFailed,
}

/// Detach the vDSO of the program being exec'ed: make the C library (or
/// Go's runtime) of the new program believe the kernel gave it none, so
/// that it reads clocks through system calls.
///
/// The new program's initial stack, as create_elf_tables (fs/binfmt_elf.c)
/// lays it out at `bprm->p`: `argc`, `argc` argv pointers, NULL, `envc`
/// envp pointers, NULL, then the auxiliary vector (tag, value) pairs. The
/// layout is checked before anything is written: the first word must be
/// `argc` and the word after envp must be NULL (a 32-bit program's 4-byte
/// words fail the first check).
#[inline(always)]
pub fn detach_vdso(bprm: u64, off: &BinprmOffsets) -> Exec {
    let Some(sp) = read_kernel::<u64>(bprm + u64::from(off.p)) else { return Exec::Unrecognised };
    let Some(argc) = read_kernel::<i32>(bprm + u64::from(off.argc)) else { return Exec::Unrecognised };
    let Some(envc) = read_kernel::<i32>(bprm + u64::from(off.envc)) else { return Exec::Unrecognised };
    if argc < 0 || envc < 0 {
        return Exec::Unrecognised;
    }
    let (argc, envc) = (argc as u64, envc as u64);
    if read_user::<u64>(sp) != Some(argc) {
        return Exec::Unrecognised;
    }
    let envp_end = sp + 8 * (argc + envc + 2);
    if read_user::<u64>(envp_end) != Some(0) {
        return Exec::Unrecognised;
    }
    let mut at = envp_end + 8;
    for _ in 0..MAX_AUXV {
        match read_user::<u64>(at) {
            None => return Exec::Unrecognised,
            Some(AT_NULL) => return Exec::NoVdso,
            Some(AT_SYSINFO_EHDR) => {
                return if write(at, &AT_IGNORE) { Exec::Detached } else { Exec::WriteFailed };
            }
            Some(_) => at += 16,
        }
    }
    Exec::NoVdso
}

#[inline(always)]
fn read_kernel<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel copes with any address.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

#[inline(always)]
fn read_user<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_user copes with any address.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}
