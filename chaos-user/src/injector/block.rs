//! The io-throttle part of the injector: no maps, no programs, no links.
//! An attack writes each disk's line of the target's `io.max` and writes
//! back the line it found when it ends; the record, the guardian and the
//! order of a start are `super::guarded`'s.
//!
//! Counters come from the target's own files, each counted from the
//! attack's start: `io.stat` (block/blk-cgroup.c, `blkcg_print_one_stat`:
//! bytes and I/Os per disk) for the throttled disks, and `io.pressure`
//! (PSI, kernel/sched/psi.c: the time some or all of the target's tasks
//! stalled on I/O, in µs). blk-throttle keeps no count of the I/Os it
//! delayed on cgroup v2, so every I/O to a limited disk is counted as
//! subject to the limit.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    path::Path,
    sync::Arc,
};

use super::{
    Shared,
    family::{FamilyInjector, Start, Stopping},
    guarded::{self, Limit, Reading, Readings},
};
use crate::{
    attack::Attack,
    controls::Control,
    counters::Counters,
    disks::{self, Disk, Views},
    error::{Error, Result},
    faults::{IoThrottle, block::Limits, size},
    plan::BlockMechanism,
};

const IO_MAX: &str = "io.max";
/// The fields of a line of `io.max`, in the kernel's order
/// (block/blk-throttle.c, `tg_prfill_limit()`).
const FIELDS: [&str; 4] = ["rbps", "wbps", "riops", "wiops"];

/// One disk's line of `io.stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Io {
    rbytes: u64,
    wbytes: u64,
    rios: u64,
    wios: u64,
}

/// What the target's files say, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Stat {
    disks: BTreeMap<String, Io>,
    some_us: u64,
    full_us: u64,
}

impl Reading for Stat {
    fn read(cgroup: &Path) -> Self {
        let file = |name: &str| std::fs::read_to_string(cgroup.join(name)).unwrap_or_default();
        let (some_us, full_us) = guarded::pressure(&file("io.pressure"));
        Self { disks: io_stat(&file("io.stat")), some_us, full_us }
    }

    fn since(&self, start: &Self) -> Self {
        let disks = self
            .disks
            .iter()
            .map(|(key, now)| {
                let was = start.disks.get(key).copied().unwrap_or_default();
                let io = Io {
                    rbytes: now.rbytes.saturating_sub(was.rbytes),
                    wbytes: now.wbytes.saturating_sub(was.wbytes),
                    rios: now.rios.saturating_sub(was.rios),
                    wios: now.wios.saturating_sub(was.wios),
                };
                (key.clone(), io)
            })
            .collect();
        Self {
            disks,
            some_us: self.some_us.saturating_sub(start.some_us),
            full_us: self.full_us.saturating_sub(start.full_us),
        }
    }
}

/// `io.stat`: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..`
/// per disk (and more fields where io.cost or io.latency add theirs).
fn io_stat(text: &str) -> BTreeMap<String, Io> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let key = f.next()?.to_owned();
            let mut io = Io::default();
            for (name, value) in f.filter_map(|kv| kv.split_once('=')) {
                let v = value.parse().unwrap_or(0);
                match name {
                    "rbytes" => io.rbytes = v,
                    "wbytes" => io.wbytes = v,
                    "rios" => io.rios = v,
                    "wios" => io.wios = v,
                    _ => {}
                }
            }
            Some((key, io))
        })
        .collect()
}

/// An attack's controls and counters.
pub(super) type Handle = Limit<Stat>;

/// A running attack's counters: its readings and its disks' keys.
type Tally = (Arc<Readings<Stat>>, Vec<String>);

#[derive(Default)]
pub struct Block {
    tallies: HashMap<u32, Tally>,
}

impl FamilyInjector for Block {
    type Fault = IoThrottle;
    type Mechanism = BlockMechanism;
    type Handle = Handle;

    fn begin(&mut self, shared: &mut Shared, start: &Start<'_, Self>, handle: &mut Handle) -> Result<()> {
        let Start { attack, fault, slot, .. } = *start;
        let controls = preflight(attack, fault)?;
        let keys = controls.iter().filter_map(|c| c.key.clone()).collect();
        let begun = handle.begin(shared, start, controls);
        self.tallies.insert(slot, (Arc::clone(&handle.tally), keys));
        begun
    }

    /// The lines before written back: inert from then; then the guardian
    /// is told it may go, and the record closed.
    fn stop(&mut self, shared: &mut Shared, _attack: &Attack, handle: Handle) -> Stopping {
        handle.stop(shared, "io-throttle")
    }

    fn counters(&self, _shared: &Shared, slot: u32) -> Result<Counters> {
        let Some((t, keys)) = self.tallies.get(&slot) else { return Ok(Counters::default()) };
        let s = t.now();
        let io = keys.iter().filter_map(|k| s.disks.get(k)).fold(Io::default(), |a, b| Io {
            rbytes: a.rbytes + b.rbytes,
            wbytes: a.wbytes + b.wbytes,
            rios: a.rios + b.rios,
            wios: a.wios + b.wios,
        });
        let detail = [
            ("read_kib", io.rbytes / 1024),
            ("written_kib", io.wbytes / 1024),
            ("reads", io.rios),
            ("writes", io.wios),
            ("stall_ms", s.some_us / 1000),
            ("full_stall_ms", s.full_us / 1000),
            ("guardian_lost", t.guardian_lost()),
        ]
        .into_iter()
        .collect();
        let ios = io.rios + io.wios;
        Ok(Counters { matched: ios, injected: ios, expired: 0, detail })
    }
}

/// Each disk's line of the target's `io.max` as it is, to be set to the
/// fault's limits; refused (exit 3, with the fix) where it cannot or must
/// not be. Run before an experiment begins and again at the start.
pub(super) fn preflight(attack: &Attack, fault: &IoThrottle) -> Result<Vec<Control>> {
    let target = &attack.target;
    guarded::refuse_own(&target.path, "io-throttle", IO_MAX)?;
    let views = Views::default();
    let mut seen: Vec<(Disk, &str)> = Vec::new();
    for arg in &fault.devices {
        let disk = disks::resolve(&arg.0, &views).map_err(Error::invalid)?;
        if let Some((_, first)) = seen.iter().find(|(d, _)| d.key == disk.key) {
            return Err(Error::invalid(format!(
                "--device {first} and --device {} are the same disk, {disk}: give it once",
                arg.0
            )));
        }
        seen.push((disk, &arg.0));
    }
    seen.iter()
        .map(|(disk, _)| {
            let found = Control::read_line(&target.path, target.id, IO_MAX, &disk.key, "").map_err(|e| {
                if e.kind() != io::ErrorKind::NotFound {
                    Error::kernel(format!("reading {IO_MAX} of {target}"), e)
                } else if target.path.join("io.stat").exists() {
                    Error::invalid(format!(
                        "{target} has the io controller but no {IO_MAX}: this kernel is built without \
                         CONFIG_BLK_DEV_THROTTLING, and cannot limit I/O rates ({e})"
                    ))
                } else {
                    guarded::not_enabled(&target.path, "io", IO_MAX, "IOAccounting=yes", e)
                }
            })?;
            let set = limited(&disk.key, &found.previous, &fault.limits).map_err(|(flag, had)| {
                Error::invalid(format!(
                    "{target} is limited to {had} on {disk} already ({IO_MAX}: {:?}), no more than {flag}: the \
                     attack would loosen it; ask for less",
                    found.previous
                ))
            })?;
            Ok(Control { set, ..found })
        })
        .collect()
}

/// The line `previous` (`""`: no limits) with `limits` in place, as the
/// kernel prints it back; `Err((flag, limit))` where the line has that
/// limit already, or a tighter one.
fn limited(key: &str, previous: &str, limits: &Limits) -> std::result::Result<String, (String, String)> {
    let mut fields: Vec<(String, String)> = if previous.is_empty() {
        FIELDS.iter().map(|f| ((*f).to_owned(), "max".to_owned())).collect()
    } else {
        previous
            .split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    for (name, flag, want) in limits.fields() {
        let show =
            |v: u64| if name.ends_with("bps") { format!("{}/s", size::format(v)) } else { format!("{v}/s") };
        match fields.iter_mut().find(|(k, _)| k == name) {
            Some((_, had)) => {
                if let Ok(n) = had.parse::<u64>()
                    && n <= want
                {
                    return Err((format!("{flag} {}", show(want)), format!("{name} {}", show(n))));
                }
                *had = want.to_string();
            }
            None => fields.push((name.to_owned(), want.to_string())),
        }
    }
    Ok(fields.iter().fold(key.to_owned(), |line, (k, v)| format!("{line} {k}={v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_takes_the_limits_and_keeps_the_rest() {
        let l = |r, w, ri, wi| Limits { read_bps: r, write_bps: w, read_iops: ri, write_iops: wi };
        let w2m = l(None, Some(2 << 20), None, None);
        assert_eq!(limited("7:0", "", &w2m), Ok("7:0 rbps=max wbps=2097152 riops=max wiops=max".into()));
        let had = "7:0 rbps=max wbps=max riops=50 wiops=max";
        assert_eq!(limited("7:0", had, &w2m), Ok("7:0 rbps=max wbps=2097152 riops=50 wiops=max".into()));
        // Loosening is refused, naming the limit there.
        let e = limited("7:0", had, &l(None, None, Some(100), None)).unwrap_err();
        assert_eq!(e, ("--read-iops 100/s".into(), "riops 50/s".into()));
        assert!(limited("7:0", had, &l(None, None, Some(50), None)).is_err());
        assert!(limited("7:0", had, &l(None, None, Some(49), None)).is_ok());
        let e = limited(
            "7:0",
            "7:0 rbps=1048576 wbps=max riops=max wiops=max",
            &l(Some(2 << 20), None, None, None),
        );
        assert_eq!(e.unwrap_err().1, "rbps 1M/s");
    }

    #[test]
    fn io_stat_reads_as_the_kernel_writes_it() {
        let t = "7:0 rbytes=6291456 wbytes=4096 rios=96 wios=1 dbytes=0 dios=0\n\
                 8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0 cost.vrate=100.00\n";
        let s = io_stat(t);
        assert_eq!(s["7:0"], Io { rbytes: 6_291_456, wbytes: 4096, rios: 96, wios: 1 });
        assert_eq!(s["8:0"], Io { rbytes: 1, wbytes: 2, rios: 3, wios: 4 });
        let start =
            Stat { disks: io_stat("7:0 rbytes=6291000 wbytes=0 rios=90 wios=0\n"), some_us: 5, full_us: 1 };
        let now = Stat { disks: s, some_us: 25, full_us: 11 };
        let d = now.since(&start);
        assert_eq!(d.disks["7:0"], Io { rbytes: 456, wbytes: 4096, rios: 6, wios: 1 });
        assert_eq!(d.disks["8:0"].rios, 3, "a disk first seen during the attack counts from 0");
        assert_eq!((d.some_us, d.full_us), (20, 10));
    }
}
