//! `io-throttle`: the target's disk I/O held to a rate through cgroup v2's
//! `io.max`; every ending restores each disk's line found before.
//!
//! The disk is a loop device of the test's own (a real block device: its
//! I/O goes through the block layer and blk-throttle as a disk's does).
//! Measured from outside the mechanism: `dd` with O_DIRECT (no page
//! cache) in the target and in a sibling, timed by dd itself.
//!
//! blk-throttle (block/blk-throttle.c) lets a cgroup's bios through no
//! faster than its limits, after a first slice's allowance at once (a
//! fresh slice may dispatch what its length allows: `throtl_slice`, 100 ms
//! on a rotational disk, which a loop device says it is): in the 6.12 VM a
//! 3 s write came out 2.3% faster than its limit, and 200 reads at 100 a
//! second 4.5% faster. So the rate asserted is the marginal one, the
//! difference of a short and a long transfer, in which that allowance and
//! dd's own start cancel out: the rate the disk is held to, within the
//! issue's ±5%.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use chaos::capabilities::Capability;

use crate::{
    fixtures::{
        cgroup::{Cgroup, ControllerForChildren},
        limits,
        loopdisk::LoopDisk,
        process::Place,
        runner::{self, ChaosRun},
    },
    harness::Ctx,
};

/// The write limit, and what the target writes under it: a short and a
/// long transfer (1 s and 4 s at the limit).
const WRITE_BPS: u64 = 2 << 20;
const WRITTEN: [u64; 2] = [2 << 20, 8 << 20];
/// The read limit in I/Os a second, and the reads (1 s and 4 s).
const READ_IOPS: u64 = 100;
const READS: [u64; 2] = [100, 400];

/// A target and a sibling with the io controller, and a disk.
struct World {
    target: Cgroup,
    sibling: Cgroup,
    disk: LoopDisk,
    // Dropped last: the cgroups go first.
    _io: ControllerForChildren,
}

impl World {
    fn new(ctx: &mut Ctx, fs: bool) -> anyhow::Result<Self> {
        ctx.require(Capability::CgroupIo)?;
        let io = ControllerForChildren::enable("io")?;
        let (target, sibling) = (Cgroup::new("io-target")?, Cgroup::new("io-sibling")?);
        Ok(Self { target, sibling, disk: LoopDisk::new(fs)?, _io: io })
    }

    fn io_max(&self) -> String {
        std::fs::read_to_string(self.target.path.join("io.max")).unwrap_or_default().trim().to_owned()
    }

    fn attack(&self, flags: &[&str]) -> anyhow::Result<ChaosRun> {
        let mut args = vec!["attack", "io-throttle", "--cgroup", &self.target.rel];
        args.extend_from_slice(flags);
        let mut run = ChaosRun::start(&args)?;
        run.wait_event("start", Duration::from_secs(30))?;
        Ok(run)
    }
}

/// What dd reported: bytes moved and seconds taken.
#[derive(Debug)]
struct Moved {
    bytes: u64,
    secs: f64,
}

impl Moved {
    fn bps(&self) -> f64 {
        self.bytes as f64 / self.secs
    }
}

/// Run dd in `cgroup` with `operands` and read its summary line
/// (`6291456 bytes (6.3 MB, 6.0 MiB) copied, 3.02365 s, 2.1 MB/s`).
fn dd(cgroup: &Cgroup, operands: &[String]) -> anyhow::Result<Moved> {
    let mut cmd = Command::new("dd");
    cmd.args(operands).env("LC_ALL", "C").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let out = Place { netns: None, cgroup: Some(cgroup) }.spawn(&mut cmd)?.wait_with_output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "dd {operands:?}: {said}");
    let line =
        said.lines().find(|l| l.contains(" copied, ")).ok_or_else(|| anyhow::anyhow!("dd said {said}"))?;
    let bytes = line.split_whitespace().next().and_then(|b| b.parse().ok());
    let secs = line.split(" copied, ").nth(1).and_then(|t| t.split_whitespace().next()?.parse().ok());
    match (bytes, secs) {
        (Some(bytes), Some(secs)) if secs > 0.0 => Ok(Moved { bytes, secs }),
        _ => anyhow::bail!("dd's summary: {line}"),
    }
}

/// dd writing `bytes` to `to` in 256 KiB blocks, O_DIRECT.
fn writes(to: &Path, bytes: u64) -> Vec<String> {
    let extra = if to.starts_with("/dev") { "" } else { ",notrunc" };
    vec![
        "if=/dev/zero".into(),
        format!("of={}", to.display()),
        "bs=256K".into(),
        format!("count={}", bytes / (256 << 10)),
        "oflag=direct".into(),
        format!("conv=fsync{extra}"),
    ]
}

/// dd reading `count` blocks of 4 KiB from `from`, O_DIRECT.
fn reads(from: &Path, count: u64) -> Vec<String> {
    vec![
        format!("if={}", from.display()),
        "of=/dev/null".into(),
        "bs=4K".into(),
        format!("count={count}"),
        "iflag=direct".into(),
    ]
}

/// `got` within ±5% of `want`.
fn within_5_percent(got: f64, want: f64) -> bool {
    (got - want).abs() <= want * 0.05
}

/// The short and the long transfer of `amounts` (bytes or reads) by
/// `operands`, and the marginal rate: what the long one moved more, over
/// the time it took more. Each starts after the cgroup was idle for three
/// slices, so that each starts a slice of its own with the same allowance
/// (`tg_may_dispatch()`: a new slice once the last one expired with
/// nothing queued).
fn marginal(
    cgroup: &Cgroup,
    amounts: [u64; 2],
    operands: impl Fn(u64) -> Vec<String>,
) -> anyhow::Result<f64> {
    std::thread::sleep(Duration::from_millis(300));
    let short = dd(cgroup, &operands(amounts[0]))?;
    std::thread::sleep(Duration::from_millis(300));
    let long = dd(cgroup, &operands(amounts[1]))?;
    anyhow::ensure!(long.secs > short.secs, "{short:?}, then {long:?}");
    Ok((amounts[1] - amounts[0]) as f64 / (long.secs - short.secs))
}

/// `--write-bps 2M --read-iops 100` on the target's disk: O_DIRECT writes
/// go at 2 MiB/s and reads of 4 KiB at 100 a second, each within ±5%
/// (marginal rates, see the module's doc), where the same ran at least
/// four times as fast before the attack; the sibling writes to the same
/// disk at least four times as fast as the target's limit during the
/// attack; the counters saw the target's I/Os; SIGINT ends the attack
/// (exit 2, as every signal's abort) and `io.max` is as before.
pub fn holds_direct_io_to_the_limits_and_spares_the_sibling(ctx: &mut Ctx) -> anyhow::Result<()> {
    let w = World::new(ctx, false)?;
    let disk = w.disk.device.clone();
    // The first write to the disk also allocates its backing file's pages
    // (8 MiB/s in one run, against 57 to 97 once allocated): not timed.
    dd(&w.target, &writes(&disk, WRITTEN[1]))?;
    let free_w = dd(&w.target, &writes(&disk, WRITTEN[1]))?;
    let free_r = dd(&w.target, &reads(&disk, READS[1]))?;
    let before = w.io_max();
    let metrics_addr = format!("127.0.0.1:{}", super::experiment::free_port()?);
    let run = w.attack(&[
        "--metrics-addr",
        &metrics_addr,
        "--device",
        &disk.display().to_string(),
        "--write-bps",
        "2M",
        "--read-iops",
        &READ_IOPS.to_string(),
        "--duration",
        "60s",
    ])?;
    let during = w.io_max();
    let held_bps = marginal(&w.target, WRITTEN, |n| writes(&disk, n))?;
    let held_iops = marginal(&w.target, READS, |n| reads(&disk, n))?;
    let sibling = dd(&w.sibling, &writes(&disk, WRITTEN[1]))?;
    let metrics = super::experiment::scrape(&metrics_addr, None)?;
    run.signal(libc::SIGINT);
    let ended = run.wait(Duration::from_secs(30))?;
    let after = w.io_max();
    let mib = |bps: f64| bps / f64::from(1 << 20);
    eprint!(
        "[target writes {:.1} MiB/s free, {:.3} MiB/s held (limit 2); reads {:.0}/s free, {:.1}/s held (limit \
         {READ_IOPS}); sibling {:.1} MiB/s] ",
        mib(free_w.bps()),
        mib(held_bps),
        READS[1] as f64 / free_r.secs,
        held_iops,
        mib(sibling.bps())
    );
    anyhow::ensure!(ended.code() == Some(2), "exit {:?}: {}", ended.code(), ended.stderr);
    let key = &w.disk.key;
    anyhow::ensure!(
        during == format!("{key} rbps=max wbps={WRITE_BPS} riops={READ_IOPS} wiops=max"),
        "io.max during the attack: {during:?}"
    );
    anyhow::ensure!(after == before, "io.max is {after:?} after, {before:?} before");
    // Else the disk is too slow here for a limit to be told apart.
    anyhow::ensure!(
        free_w.bps() >= 4.0 * WRITE_BPS as f64 && READS[1] as f64 / free_r.secs >= 4.0 * READ_IOPS as f64,
        "the loop disk is too slow to measure a limit: {free_w:?}, {free_r:?}"
    );
    anyhow::ensure!(
        within_5_percent(held_bps, WRITE_BPS as f64),
        "writes under the limit: {held_bps:.0} B/s"
    );
    anyhow::ensure!(within_5_percent(held_iops, READ_IOPS as f64), "reads under the limit: {held_iops:.1}/s");
    anyhow::ensure!(sibling.bps() >= 4.0 * WRITE_BPS as f64, "the sibling was held: {sibling:?}");
    let c = &ended.aborted_by("SIGINT")?["counters"];
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    let (written, read): (u64, u64) = (WRITTEN.iter().sum(), READS.iter().sum());
    anyhow::ensure!(
        n("written_kib") >= written >> 10 && n("reads") >= read && n("writes") >= written / (256 << 10),
        "counters: {c}"
    );
    anyhow::ensure!(n("injected") == n("reads") + n("writes") && n("stall_ms") >= 5000, "counters: {c}");
    // The same counters, while the attack ran, for Prometheus (and valid
    // for promtool).
    let scraped = |event: &str| {
        let series = format!("chaos_attack_events_total{{attack=\"io-throttle-1\",event=\"{event}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&series)?.parse::<u64>().ok()).unwrap_or(0)
    };
    anyhow::ensure!(
        scraped("written_kib") >= written >> 10 && scraped("reads") >= read && scraped("stall_ms") >= 5000,
        "io-throttle's counters in the metrics:\n{metrics}"
    );
    super::experiment::promtool_check_metrics(&metrics)?;
    runner::recover_finds_nothing()
}

/// `--device` as a directory on an ext4 filesystem on the disk's first
/// partition: the limit goes on the whole disk (io.max takes no
/// partitions), and an O_DIRECT write to a file there is held to it.
pub fn a_path_on_a_partition_throttles_its_disk(ctx: &mut Ctx) -> anyhow::Result<()> {
    let w = World::new(ctx, true)?;
    let dir = w.disk.mounted.clone().ok_or_else(|| anyhow::anyhow!("not mounted"))?;
    let file = dir.join("data");
    // Allocated before the attack: the writes then move data only.
    dd(&w.target, &writes(&file, WRITTEN[1]))?;
    let run =
        w.attack(&["--device", &dir.display().to_string(), "--write-bps", "2M", "--duration", "60s"])?;
    let during = w.io_max();
    let held = marginal(&w.target, WRITTEN, |n| writes(&file, n))?;
    run.signal(libc::SIGTERM);
    let ended = run.wait(Duration::from_secs(30))?;
    eprint!("[a file on ext4 on {}: {:.3} MiB/s (limit 2)] ", w.disk.partition.display(), held / 1048576.0);
    anyhow::ensure!(ended.code() == Some(2), "exit {:?}: {}", ended.code(), ended.stderr);
    anyhow::ensure!(during.starts_with(&format!("{} ", w.disk.key)), "io.max during the attack: {during:?}");
    anyhow::ensure!(w.io_max().is_empty(), "io.max after: {:?}", w.io_max());
    // The filesystem's own writes (its journal, by a kernel thread outside
    // the target) are not the target's; the data is.
    anyhow::ensure!(
        within_5_percent(held, WRITE_BPS as f64),
        "a file's writes under the limit: {held:.0} B/s"
    );
    Ok(())
}

/// kill -9 of chaos: its guardian restores the line at once; a chaos that
/// hangs (SIGSTOP) keeps it only until the deadline. A limit someone else
/// set on another disk stays throughout.
pub fn every_ending_restores_the_limits(ctx: &mut Ctx) -> anyhow::Result<()> {
    let w = World::new(ctx, false)?;
    let other = LoopDisk::new(false)?;
    let theirs = format!("{} rbps=max wbps=max riops=50 wiops=max", other.key);
    std::fs::write(w.target.path.join("io.max"), &theirs)?;
    anyhow::ensure!(w.io_max() == theirs, "io.max: {:?}", w.io_max());
    let disk = w.disk.device.display().to_string();
    limits::endings_restore("io.max", &|| w.io_max(), &|d| {
        w.attack(&["--device", &disk, "--read-bps", "1M", "--duration", d])
    })
}

/// What must not or cannot be throttled is refused with exit 3 and left as
/// it was: where the io controller is on cgroup v1 (this project's host),
/// every io-throttle; elsewhere a parent that does not enable the
/// controller, chaos's own cgroup, the root, a partition, a file on tmpfs,
/// no such device, one disk given twice, a limit that would loosen the
/// target's, and bad flags.
pub fn refusals_leave_everything_as_it_was(ctx: &mut Ctx) -> anyhow::Result<()> {
    if !ctx.has(Capability::CgroupIo) {
        let t = Cgroup::new("io-v1")?;
        let ended = runner::run(&[
            "attack",
            "io-throttle",
            "--cgroup",
            &t.rel,
            "--device",
            "/",
            "--write-bps",
            "1M",
            "--duration",
            "5s",
        ])?;
        return ended.refused("io-throttle where io is on cgroup v1", "bound to a cgroup v1 hierarchy");
    }
    let w = World::new(ctx, false)?;
    let target = w.target.rel.clone();
    let disk = w.disk.device.display().to_string();
    let before = w.io_max();
    let parent = Cgroup::new("io-parent")?;
    std::fs::create_dir(parent.path.join("child"))?;
    let child = format!("{}/child", parent.rel);
    let flags = ["--device", disk.as_str(), "--write-bps", "1M", "--duration", "5s"];
    runner::run(&[&["attack", "io-throttle", "--cgroup", &child][..], &flags].concat())?
        .refused("a parent without +io", "echo +io >")?;
    limits::refuses_its_own_cgroup(&w.target, &["io-throttle", "--device", &disk, "--write-bps", "1M"])?;
    let partition = w.disk.partition.display().to_string();
    let tmp = crate::fixtures::scratch::PrivDir::new("io-tmpfs")?;
    let tmpfs = tmp.dir().join("t");
    std::fs::create_dir(&tmpfs)?;
    let mounted = Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&tmpfs).status()?;
    anyhow::ensure!(mounted.success(), "mounting a tmpfs");
    let tmpfs_dir = tmpfs.display().to_string();
    let same = w.disk.key.clone();
    let cases: &[(&[&str], &str)] = &[
        (&["--cgroup", "/", "--allow-host", "--device", &disk, "--write-bps", "1M"], "is the root cgroup"),
        (&["--cgroup", &target, "--device", &partition, "--write-bps", "1M"], "is the partition"),
        (&["--cgroup", &target, "--device", &tmpfs_dir, "--write-bps", "1M"], "is on tmpfs"),
        (&["--cgroup", &target, "--device", "7:1048575", "--write-bps", "1M"], "no block device 7:1048575"),
        (&["--cgroup", &target, "--device", &disk, "--device", &same, "--write-bps", "1M"], "the same disk"),
        (&["--cgroup", &target, "--device", "loop0", "--write-bps", "1M"], "absolute path"),
        (&["--cgroup", &target, "--device", &disk], "at least one limit"),
        (&["--cgroup", &target, "--device", &disk, "--write-bps", "1K"], "less than 4K/s"),
        (&["--cgroup", &target, "--device", &disk, "--read-iops", "0"], "at least 1"),
        (&["--cgroup", &target, "--write-bps", "1M"], "--device"),
    ];
    let result = cases.iter().try_for_each(|(flags, says)| {
        let mut args = vec!["attack", "io-throttle", "--duration", "5s"];
        args.extend_from_slice(flags);
        runner::run(&args)?.refused(&format!("{flags:?}"), says)?;
        anyhow::ensure!(w.io_max() == before, "{flags:?}: io.max is {:?}", w.io_max());
        Ok(())
    });
    let _ = Command::new("umount").arg(&tmpfs).status();
    result?;
    // Limited tighter by someone else: the attack would loosen it.
    let theirs = format!("{same} rbps=max wbps=1048576 riops=max wiops=max");
    std::fs::write(w.target.path.join("io.max"), &theirs)?;
    let tighter = runner::run(
        &[
            &["attack", "io-throttle", "--cgroup", &target, "--device", &disk, "--write-bps", "2M"][..],
            &["--duration", "5s"],
        ]
        .concat(),
    )?;
    let still = w.io_max();
    std::fs::write(w.target.path.join("io.max"), format!("{same} wbps=max"))?;
    tighter.refused("a tighter limit", "would loosen it")?;
    anyhow::ensure!(still == theirs, "someone else's limit was changed to {still:?}");
    runner::recover_finds_nothing()
}
