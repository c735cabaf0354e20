//! The clock part of the injector: rules keyed by target cgroup, the level
//! mask and `struct linux_binprm` offsets (one configuration entry), the
//! system call hooks (fexit programs, or tracepoints) and the exec hook —
//! global, attached once and reference-counted over the clock attacks,
//! fd-owned (tracing, perf and raw tracepoint links vanish with this
//! process) — and, per attack, a uprobe
//! and a uretprobe on the C library's `clock_gettime` of each process the
//! target has when the attack starts (perf events with a pid filter:
//! uprobes insert breakpoints only into those processes' memory, so no
//! other process pays for them).

mod libc;

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    num::NonZeroU32,
    path::PathBuf,
    time::Instant,
};

use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{
        FExit, RawTracePoint, TracePoint, UProbe,
        fexit::FExitLink,
        links::Link as _,
        raw_trace_point::RawTracePointLink,
        trace_point::TracePointLink,
        uprobe::{UProbeAttachLocation, UProbeLink, UProbeScope},
    },
};
use chaos_abi::clock::{self, BinprmOffsets, ClockConfig, ClockCounters, ClockRule, FLAG_DETACH_VDSO};

use super::{
    Shared,
    family::{FamilyInjector, Start, Stopping},
    links::LinkSet,
    maps::{btf_offsets, map_mut},
    rules::{CounterFields, RuleTable, named},
};
use crate::{
    attach::fmod_ret::{self, FmodRetLink},
    attack::Attack,
    capabilities::environment,
    counters::Counters,
    ebpf::describe,
    error::{Error, Result},
    faults::ClockSkew,
    plan::{ClockMechanism, clock::SyscallHook},
    targets::pids_in_subtree,
};

/// fexit programs and the system call entry function each attaches to.
const FEXITS: [(&str, &str); 2] = [
    ("clock_fexit_gettime", "__x64_sys_clock_gettime"),
    ("clock_fexit_gettimeofday", "__x64_sys_gettimeofday"),
];
/// `time(2)`'s entry function, and its program: the fexit program, or the
/// fmod_ret program that answers the call (never both: each would shift
/// what it stores).
const TIME_FUNCTION: &str = "__x64_sys_time";
const TIME_FEXIT: &str = "clock_fexit_time";
const TIME_FMOD_RET: &str = "clock_fmod_time";
/// Tracepoint fallback: entry programs and the syscall tracepoint each
/// attaches to.
const ENTRIES: [(&str, &str); 3] = [
    ("clock_enter_gettime", "sys_enter_clock_gettime"),
    ("clock_enter_gettimeofday", "sys_enter_gettimeofday"),
    ("clock_enter_time", "sys_enter_time"),
];
/// The exit program, on each of these.
const EXIT_PROGRAM: &str = "clock_exit";
const EXITS: [&str; 3] = ["sys_exit_clock_gettime", "sys_exit_gettimeofday", "sys_exit_time"];
const EXEC_PROGRAM: &str = "clock_exec";
const LIBC_ENTER: &str = "clock_libc_enter";
const LIBC_RETURN: &str = "clock_libc_return";
/// The same programs for uprobe_multi links (Linux 6.6), preferred where
/// the kernel filters them by process: no perf event per process, so no
/// switching of the scheduler's perf static key (kernel text patching) at
/// every attack's start and end.
const LIBC_ENTER_MULTI: &str = "clock_libc_enter_multi";
const LIBC_RETURN_MULTI: &str = "clock_libc_return_multi";
/// The C library function probed in running processes.
const LIBC_FUNCTION: &str = "clock_gettime";

/// What a running clock attack holds.
#[derive(Debug, Default)]
pub struct Handle {
    /// Holds a reference on the shared links.
    global: bool,
    /// The uprobe and uretprobe links of each process probed; detached when
    /// the attack stops.
    libc: Vec<(i32, UProbeLink, UProbeLink)>,
}

/// The global links: 3 fexit programs (or 2 and the fmod_ret program on
/// `time(2)`; or 3 entry and 3 exit tracepoints), and the exec hook.
struct Links {
    fexits: Vec<FExitLink>,
    /// Detached when dropped (its fds close).
    time_fmod_ret: Option<FmodRetLink>,
    tracepoints: Vec<TracePointLink>,
    exec: RawTracePointLink,
}

/// Rules, links and offsets shared by every clock attack.
pub struct Clock {
    rules: RuleTable<ClockRule, ClockCounters>,
    /// The global links, one set shared by every clock attack.
    links: LinkSet<(), Links>,
    binprm: Option<BinprmOffsets>,
    /// CLOCK_TAI minus CLOCK_REALTIME, measured when the first attack
    /// starts (see [`ClockConfig::tai_offset_ns`]).
    tai_offset_ns: Option<u64>,
    /// Processes with C library probes, by counter slot (for counters).
    probed: BTreeMap<u32, usize>,
    /// `clock_gettime`'s file offset in each C library seen, by identity.
    offsets: StdHashMap<(String, u64), std::result::Result<u64, String>>,
}

/// The names of [`ClockCounters`]' fields in events and reports, in
/// declaration order (`-`: `expired`).
pub(super) const COUNTER_NAMES: &str = "syscall_matched syscall_shifted time_return_unshifted libc_matched libc_shifted \
                             execs vdso_detached exec_unrecognised write_failed -";

// SAFETY: #[repr(C)], u64 fields only (chaos-abi).
unsafe impl CounterFields for ClockCounters {}

impl Default for Clock {
    fn default() -> Self {
        Self {
            rules: RuleTable::new(
                clock::RULES,
                clock::COUNTERS,
                "a clock skew in this run; one offset per target",
            ),
            links: LinkSet::default(),
            binprm: None,
            tai_offset_ns: None,
            probed: BTreeMap::new(),
            offsets: StdHashMap::new(),
        }
    }
}

impl FamilyInjector for Clock {
    type Fault = ClockSkew;
    type Mechanism = ClockMechanism;
    type Handle = Handle;

    fn begin(&mut self, shared: &mut Shared, start: &Start<'_, Self>, handle: &mut Handle) -> Result<()> {
        let Start { attack, fault, mechanism, slot, .. } = *start;
        self.binprm_offsets()?;
        if mechanism.time_fmod_ret && self.tai_offset_ns.is_none() {
            self.tai_offset_ns = Some(tai_offset_ns()?);
        }
        self.rules.reset_counters(&mut shared.ebpf, slot)?;
        let flags = if mechanism.exec_detach_vdso { FLAG_DETACH_VDSO } else { 0 };
        self.insert_rule(&mut shared.ebpf, attack, fault.rule(start.deadline_from_now(), slot, flags))?;
        self.acquire(&mut shared.ebpf, mechanism)?;
        handle.global = true;
        if mechanism.libc_uprobes {
            handle.libc = self.uprobe_running(&mut shared.ebpf, attack)?;
        }
        self.probed.insert(slot, handle.libc.len());
        Ok(())
    }

    /// Delete the rule (every hook passes from the returned instant on),
    /// then detach this attack's uprobes and release the shared links.
    fn stop(&mut self, shared: &mut Shared, attack: &Attack, handle: Handle) -> Stopping {
        let inert = self.remove_rule(&mut shared.ebpf, attack).map(|()| Instant::now());
        for (pid, enter, ret) in handle.libc {
            // A process that exited took its probes with it; detaching what
            // is gone fails harmlessly.
            for link in [enter, ret] {
                if let Err(e) = link.detach() {
                    tracing::debug!(pid, "detaching a C library probe: {}", describe(&e));
                }
            }
        }
        let released = if handle.global { self.release() } else { Ok(()) };
        (inert, released)
    }

    fn counters(&self, shared: &Shared, slot: u32) -> Result<Counters> {
        let c = self.rules.counters(&shared.ebpf, slot)?;
        let mut detail = named(&c, COUNTER_NAMES);
        detail.insert("processes_probed", self.probed.get(&slot).copied().unwrap_or(0) as u64);
        Ok(Counters {
            matched: c.syscall_matched + c.libc_matched,
            injected: c.syscall_shifted + c.libc_shifted,
            expired: c.expired,
            detail,
        })
    }
}

impl Clock {
    /// This kernel's `struct linux_binprm` offsets, from its BTF (once).
    fn binprm_offsets(&mut self) -> Result<BinprmOffsets> {
        let purpose = ["clock-skew", "read exec's stack layout", "struct linux_binprm"];
        btf_offsets(&mut self.binprm, purpose, |btf| {
            let field = |name: &str| btf.offset_of("linux_binprm", name);
            Ok(BinprmOffsets { p: field("p")?, argc: field("argc")?, envc: field("envc")?, _pad: 0 })
        })
    }

    fn write_config(&self, ebpf: &mut Ebpf) -> Result<()> {
        let value = ClockConfig {
            levels: self.rules.levels(),
            binprm: self.binprm.unwrap_or_default(),
            tai_offset_ns: self.tai_offset_ns.unwrap_or_default(),
        };
        let mut config: Array<&mut MapData, ClockConfig> = map_mut(ebpf, clock::CONFIG)?;
        config.set(0, &value, 0).map_err(|e| Error::kernel("writing the clock configuration", e))
    }

    fn insert_rule(&mut self, ebpf: &mut Ebpf, attack: &Attack, rule: ClockRule) -> Result<()> {
        self.rules.insert(ebpf, attack, &rule)?;
        self.write_config(ebpf)
    }

    fn remove_rule(&mut self, ebpf: &mut Ebpf, attack: &Attack) -> Result<()> {
        if self.rules.remove(ebpf, attack)? {
            self.write_config(ebpf)?;
        }
        Ok(())
    }

    /// Attach the system call hooks and the exec hook (loading them first
    /// if needed), or count one more user. Every clock attack of a run has
    /// the same plan, so the first one's mechanism is everyone's.
    fn acquire(&mut self, ebpf: &mut Ebpf, mechanism: &ClockMechanism) -> Result<()> {
        self.links.acquire((), || attach_all(ebpf, mechanism.syscalls, mechanism.time_fmod_ret))
    }

    fn release(&mut self) -> Result<()> {
        let Some(links) = self.links.release(&()) else { return Ok(()) };
        let mut result = Ok(());
        for link in links.fexits {
            if let Err(e) = link.detach() {
                result = Err(Error::kernel("detaching a clock fexit program", anyhow::anyhow!(describe(&e))));
            }
        }
        for link in links.tracepoints {
            if let Err(e) = link.detach() {
                result = Err(Error::kernel("detaching a clock tracepoint", anyhow::anyhow!(describe(&e))));
            }
        }
        drop(links.time_fmod_ret);
        if let Err(e) = links.exec.detach() {
            result = Err(Error::kernel("detaching the exec hook", anyhow::anyhow!(describe(&e))));
        }
        result
    }

    /// Probe the C library's `clock_gettime` in every process of the
    /// target now. A process that exits or execs meanwhile (the exec hook
    /// covers its new image), or maps no C library (a static or Go
    /// program), is skipped.
    fn uprobe_running(
        &mut self,
        ebpf: &mut Ebpf,
        attack: &Attack,
    ) -> Result<Vec<(i32, UProbeLink, UProbeLink)>> {
        let ours = std::process::id() as i32;
        let mut probed = Vec::new();
        let mut without = Vec::new();
        for pid in pids_in_subtree(&attack.target.path) {
            if pid == ours {
                continue;
            }
            let Some(lib) = libc::mapped(pid) else {
                // Kernel threads, zombies, static and Go programs.
                without.push(pid);
                continue;
            };
            let offset = match self.offset_in(&lib) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(pid, "cannot probe {} of process {pid}: {e}", lib.shown);
                    continue;
                }
            };
            match attach_libc(ebpf, pid, &lib.path, offset) {
                Ok((enter, ret)) => probed.push((pid, enter, ret)),
                Err(e) if alive(pid) && libc::mapped(pid).as_ref() == Some(&lib) => {
                    // The links of the processes already probed drop with
                    // `probed` (aya detaches on drop).
                    return Err(Error::kernel(
                        format!("probing {LIBC_FUNCTION} in {} of process {pid}", lib.shown),
                        anyhow::anyhow!(e),
                    ));
                }
                // perf_event_open fails with ESRCH for a process that has
                // exited but is not reaped yet: its /proc entry is still
                // there, so `alive` reads its state. A process that
                // exec'd another program since its maps were read fails
                // with ENOENT (its map_files entry went with the old
                // image): the exec hook, attached above, covers the new one.
                Err(_) => tracing::debug!(pid, "exited or exec'd before its C library could be probed"),
            }
        }
        tracing::info!(
            attack = %attack.id,
            "C library {LIBC_FUNCTION} probed in {} running process(es) of the target{}",
            probed.len(),
            if without.is_empty() {
                String::new()
            } else {
                format!("; {} map no C library (static or Go programs: their vDSO reads are not shifted)", without.len())
            }
        );
        Ok(probed)
    }

    fn offset_in(&mut self, lib: &libc::Mapped) -> std::result::Result<u64, String> {
        self.offsets
            .entry(lib.identity.clone())
            .or_insert_with(|| libc::function_offset_in(&lib.path, LIBC_FUNCTION))
            .clone()
    }
}

/// CLOCK_TAI minus CLOCK_REALTIME, in whole seconds (the kernel's TAI
/// offset, tk->tai_offset: 0 unless NTP or an operator set it), as ns.
fn tai_offset_ns() -> Result<u64> {
    let read = |clock| {
        let mut ts = ::libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: one valid timespec to write.
        if unsafe { ::libc::clock_gettime(clock, &mut ts) } != 0 {
            return Err(Error::environment(format!(
                "clock-skew: reading clock {clock}: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec))
    };
    let real = read(::libc::CLOCK_REALTIME)?;
    let tai = read(::libc::CLOCK_TAI)?;
    // The two reads are nanoseconds apart; the offset itself is whole
    // seconds (ADJ_TAI takes seconds), and never negative (kernel/time/
    // ntp.c, process_adjtimex_modes).
    let seconds = ((tai - real) as f64 / 1e9).round();
    if !(0.0..=1e6).contains(&seconds) {
        return Err(Error::environment(format!(
            "clock-skew: CLOCK_TAI is {seconds} s from CLOCK_REALTIME, not a TAI offset the kernel allows"
        )));
    }
    Ok(seconds as u64 * 1_000_000_000)
}

/// The global links for `hook`.
fn attach_all(ebpf: &mut Ebpf, hook: SyscallHook, time_fmod_ret: bool) -> Result<Links> {
    let btf = match hook {
        SyscallHook::Fexit => Some(crate::btf::kernel_aya().map_err(|e| {
            Error::environment(format!("clock-skew's fexit programs need the kernel's BTF: {e}"))
        })?),
        SyscallHook::Tracepoint => None,
    };
    // aya finds the syscall tracepoints' ids in tracefs (raw tracepoints
    // and fexit go by name): where nobody has mounted it, it is mounted for
    // the attachment in a private mount namespace, which the host never
    // sees (the perf events keep what they need).
    match hook {
        SyscallHook::Tracepoint => {
            environment::with_tracefs(|| attach_global(ebpf, hook, false, btf)).map_err(Error::environment)?
        }
        SyscallHook::Fexit => attach_global(ebpf, hook, time_fmod_ret, btf),
    }
}

/// Load (if needed) and attach the system call and exec programs. On
/// failure, what was attached is detached as the links drop.
fn attach_global(
    ebpf: &mut Ebpf,
    hook: SyscallHook,
    time_fmod_ret: bool,
    btf: Option<&aya::Btf>,
) -> Result<Links> {
    let (mut fexits, mut tracepoints, mut time) = (Vec::new(), Vec::new(), None);
    match (hook, btf) {
        (SyscallHook::Fexit, Some(btf)) => {
            for (name, function) in FEXITS {
                fexits.push(attach_fexit(ebpf, btf, name, function)?);
            }
            if time_fmod_ret {
                let link = fmod_ret::attach(ebpf, crate::ebpf::faults_object(), TIME_FMOD_RET, TIME_FUNCTION)
                    .map_err(|e| {
                        let what = format!("loading program {TIME_FMOD_RET} (fmod_ret/{TIME_FUNCTION})");
                        Error::kernel(what, anyhow::anyhow!(e))
                    })?;
                time = Some(link);
            } else {
                fexits.push(attach_fexit(ebpf, btf, TIME_FEXIT, TIME_FUNCTION)?);
            }
        }
        (SyscallHook::Fexit, None) => {
            unreachable!("the kernel's BTF is read before fexit programs are loaded")
        }
        (SyscallHook::Tracepoint, _) => {
            for (program, event) in ENTRIES {
                tracepoints.push(attach_tracepoint(ebpf, program, event)?);
            }
            for event in EXITS {
                tracepoints.push(attach_tracepoint(ebpf, EXIT_PROGRAM, event)?);
            }
        }
    }
    let prog: &mut RawTracePoint = program(ebpf, EXEC_PROGRAM)?;
    if prog.fd().is_err() {
        prog.load().map_err(|e| load_error(EXEC_PROGRAM, &e))?;
    }
    let id = prog.attach("sched_process_exec").map_err(|e| {
        Error::kernel(
            format!("attaching {EXEC_PROGRAM} to sched_process_exec"),
            anyhow::anyhow!(describe(&e)),
        )
    })?;
    let exec = prog.take_link(id).map_err(|e| Error::kernel("taking the exec hook's link", e))?;
    Ok(Links { fexits, time_fmod_ret: time, tracepoints, exec })
}

fn attach_fexit(ebpf: &mut Ebpf, btf: &aya::Btf, name: &str, function: &str) -> Result<FExitLink> {
    let prog: &mut FExit = program(ebpf, name)?;
    if prog.fd().is_err() {
        prog.load(function, btf).map_err(|e| {
            Error::kernel(format!("loading program {name} (fexit/{function})"), anyhow::anyhow!(describe(&e)))
        })?;
    }
    let id = prog.attach().map_err(|e| {
        Error::kernel(format!("attaching {name} to fexit/{function}"), anyhow::anyhow!(describe(&e)))
    })?;
    prog.take_link(id).map_err(|e| Error::kernel(format!("taking the {name} link"), e))
}

fn attach_tracepoint(ebpf: &mut Ebpf, name: &str, event: &str) -> Result<TracePointLink> {
    let prog: &mut TracePoint = program(ebpf, name)?;
    if prog.fd().is_err() {
        prog.load().map_err(|e| load_error(name, &e))?;
    }
    let id = prog.attach("syscalls", event).map_err(|e| {
        Error::kernel(format!("attaching {name} to syscalls/{event}"), anyhow::anyhow!(describe(&e)))
    })?;
    prog.take_link(id).map_err(|e| Error::kernel(format!("taking the {name} link"), e))
}

/// A uprobe and a uretprobe on `offset` of `path`, for process `pid` only.
fn attach_libc(
    ebpf: &mut Ebpf,
    pid: i32,
    path: &PathBuf,
    offset: u64,
) -> std::result::Result<(UProbeLink, UProbeLink), String> {
    let scope = UProbeScope::OneProcess(NonZeroU32::new(pid as u32).ok_or("pid 0")?);
    let mut one = |name: &str| -> std::result::Result<UProbeLink, String> {
        let prog: &mut UProbe = program(ebpf, name).map_err(|e| e.to_string())?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| format!("loading {name}: {}", describe(&e)))?;
        }
        let id = prog
            .attach([UProbeAttachLocation::AbsoluteOffset(offset)], path, scope)
            .map_err(|e| format!("attaching {name}: {}", describe(&e)))?;
        prog.take_link(id).map_err(|e| format!("taking the {name} link: {e}"))
    };
    let (enter, ret) =
        if uprobe_multi() { (LIBC_ENTER_MULTI, LIBC_RETURN_MULTI) } else { (LIBC_ENTER, LIBC_RETURN) };
    let enter = one(enter)?;
    let ret = one(ret)?;
    Ok((enter, ret))
}

/// Whether uprobe_multi links work here with a per-process pid filter
/// (probed once: Linux 6.6, and later fixes to filter the whole process).
fn uprobe_multi() -> bool {
    static MULTI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MULTI.get_or_init(|| {
        let multi = aya::sys::is_uprobe_multi_supported(aya::sys::UProbeMultiFeature::ProcessScopedPidFilter);
        tracing::debug!("uprobe_multi with a process filter: {multi:?}");
        multi.unwrap_or(false)
    })
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| Error::kernel("fault object", anyhow::anyhow!("program {name} missing")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| Error::kernel(name.to_owned(), e))
}

fn load_error(name: &str, e: &aya::programs::ProgramError) -> Error {
    Error::kernel(format!("loading program {name}"), anyhow::anyhow!(describe(e)))
}

/// Whether `pid` still runs: its /proc entry exists and it is neither a
/// zombie nor dead (`state` in proc_pid_stat(5)), which an exited process
/// not yet reaped by its parent is.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')')?.1.trim_start().chars().next())
        .is_some_and(|state| !matches!(state, 'Z' | 'X' | 'x'))
}

#[cfg(test)]
mod tests {
    /// A child that exited but is not reaped yet has a /proc entry and
    /// cannot be probed (perf_event_open: ESRCH): it is not alive.
    #[test]
    fn an_unreaped_child_is_not_alive() {
        assert!(super::alive(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let t = std::time::Instant::now();
        while super::alive(pid) && t.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "reaped too early");
        assert!(!super::alive(pid), "a zombie counted as alive");
        child.wait().unwrap();
        assert!(!super::alive(pid));
    }
}
