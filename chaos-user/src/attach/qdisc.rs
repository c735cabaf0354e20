//! fq on an egress device for the duration of an attack, and the exact
//! restoration of what was there before.
//!
//! Departure times set by the egress classifier are honoured only by fq
//! (net/sched/sch_fq.c); the kernel's default qdiscs (noqueue on veth and
//! loopback, pfifo_fast or fq_codel, mq on multi-queue NICs) send at once.
//! So for a delay, rate or reorder chaos puts an fq at the device's root:
//!
//! 1. `tc -j qdisc show dev DEV` is the snapshot. chaos proceeds only when
//!    the root is the kernel's default — every qdisc the kernel creates by
//!    itself has handle `0:`, one created with tc never does (tc_modify_qdisc
//!    in net/sched/sch_api.c: "It may be default qdisc, ignore it") — and
//!    nothing else was grafted under it. Deleting a root qdisc makes the
//!    kernel attach the default again (`qdisc_graft` -> `dev_activate` ->
//!    `attach_default_qdiscs`, net/sched/sch_generic.c), so that state can be
//!    restored exactly, by deleting ours. A root fq that someone else
//!    installed is used as it is, and left alone. Anything else (htb, tbf,
//!    netem, prio, a modified default tree) is refused with a message: chaos
//!    could not put it back faithfully.
//! 2. On a device with several TX queues (a NIC's default root is `mq`, one
//!    child per queue) one fq at the root would serialise every queue's
//!    traffic through one qdisc lock for the attack's duration; chaos
//!    installs `mq` (handle `c4a0:`) with one fq per queue under it
//!    (handles `c4a1:`, `c4a2:`, ...), the layout the kernel's default has.
//! 3. The state file records the qdisc (with the snapshot) *before* it is
//!    created (intent), and marks it removed after it is gone (outcome);
//!    `tc qdisc add ... root handle c4a0:` fails with EEXIST if someone
//!    installed a root qdisc meanwhile.
//! 4. Restoring decides from the structure, never from bytes (counters,
//!    refcounts and option formats change on their own): if what chaos
//!    installed is still the root — `c4a0:` fq, or `c4a0:` mq whose children
//!    are chaos's fqs or the defaults mq made — it is deleted; anything else
//!    (someone replaced it, grafted their own qdisc under it, or chaos died
//!    before creating it) is left as it is and said so. Either way the
//!    record is closed: a later `chaos recover` has nothing to retry.
//!
//! Known cost, not avoidable with qdiscs: grafting a root qdisc (or an mq
//! child) deactivates the device for an instant (`qdisc_graft()` /
//! `mq_graft()` -> `dev_deactivate()`, net/sched/sch_api.c, sch_mq.c), so
//! installing chaos's fq and removing it each drop what anyone sends
//! through the device in that instant, as `tc qdisc add/del` by hand does.
//! (The clsact chaos adds for its filter is kept instead: see
//! `tc::detach_egress`.)
//!
//! Commands run in the device's network namespace (`Netns::run`: `tc`
//! inherits the namespace of the thread that forks it).

use std::{
    io::Write,
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::netns::Netns;
use crate::{
    error::{Error, Result},
    faults::net::MAX_DEPARTURE_AHEAD,
    state::{Leftover, Record, StateFile},
};

/// The handle of chaos's fq: recognisable in `tc qdisc show`.
pub const HANDLE: &str = "c4a0:";

/// fq's total packet limit (default 10000): room for the delay line of
/// the target's flows without starving the other cgroups on the device.
pub const FQ_LIMIT: u32 = 100_000;
/// fq's per-flow packet limit (default 100): a flow may have this many
/// packets waiting for their departure time — at most `FQ_FLOW_LIMIT /
/// delay` packets per second per flow (200 000 at 50 ms).
pub const FQ_FLOW_LIMIT: u32 = 10_000;

/// The fq options chaos installs, as `tc` arguments.
///
/// - `horizon`: fq drops packets whose departure time is further ahead
///   (fq_packet_beyond_horizon); chaos never schedules further than
///   [`MAX_DEPARTURE_AHEAD`], so nothing it delays is dropped for it.
/// - `orphan_mask 0xffffffff`: fq keys socket-less packets (chaos's
///   copies) by `skb_get_hash() & orphan_mask`; the default mask (1023)
///   would make one in 1024 of the other cgroups' unconnected flows share a
///   flow — and so the delay line — with the target's.
/// - `nopacing`: no rate from `sk_pacing_rate`, and TCP sockets keep their
///   own pacing (fq marks paced sockets SK_PACING_FQ only with pacing on),
///   as with the default qdisc. Departure times are honoured either way
///   (fq_dequeue compares `time_to_send` before checking `rate_enable`).
pub fn fq_options() -> Vec<String> {
    let horizon = MAX_DEPARTURE_AHEAD + Duration::from_secs(4);
    [
        "fq".to_owned(),
        "limit".into(),
        FQ_LIMIT.to_string(),
        "flow_limit".into(),
        FQ_FLOW_LIMIT.to_string(),
        "horizon".into(),
        format!("{}s", horizon.as_secs()),
        "horizon_drop".into(),
        "orphan_mask".into(),
        u32::MAX.to_string(),
        "nopacing".into(),
    ]
    .into()
}

/// What to do on a device, decided from its snapshot.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The kernel's default is there: install chaos's fq, delete it after.
    Install,
    /// Someone's fq is the root: use it, change nothing.
    Reuse,
    /// Refuse, with the reason.
    Refuse(String),
}

/// Decide from `tc -j qdisc show dev DEV` output; `ahead` is how far ahead
/// the attack schedules packets (a reused fq's horizon must cover it).
/// Pure.
pub fn decide(ifname: &str, snapshot: &str, ahead: Duration) -> Decision {
    let Ok(Value::Array(all)) = serde_json::from_str::<Value>(snapshot) else {
        return Decision::Refuse(format!("cannot read `tc -j qdisc show dev {ifname}`: {snapshot:?}"));
    };
    let str_of = |q: &Value, k: &str| q.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    // clsact/ingress hang off ffff:fff1 and are not part of the egress tree.
    let tree: Vec<&Value> = all.iter().filter(|q| str_of(q, "parent") != "ffff:fff1").collect();
    let describe = |q: &Value| format!("{} {}", str_of(q, "kind"), str_of(q, "handle"));
    let Some(root) = tree.iter().find(|q| q.get("root").and_then(Value::as_bool) == Some(true)) else {
        // No root shown: the device is down (noop qdisc); deleting ours
        // brings that back.
        return if tree.is_empty() {
            Decision::Install
        } else {
            Decision::Refuse(format!("{ifname} has qdiscs but no root: {snapshot}"))
        };
    };
    let kind = str_of(root, "kind");
    let handle = str_of(root, "handle");
    if handle == HANDLE {
        return Decision::Refuse(format!(
            "{ifname} already has chaos's fq ({kind} {HANDLE}) from another chaos process: only one attack \
             with departure times per device at a time; wait for it to end (or run `chaos recover` if it died)"
        ));
    }
    if handle == "0:" {
        if let Some(custom) = tree.iter().find(|q| str_of(q, "handle") != "0:") {
            return Decision::Refuse(format!(
                "{ifname} has the kernel's default root qdisc ({kind} 0:) but someone grafted {} under it: \
                 chaos would lose it when restoring the default, so it refuses",
                describe(custom)
            ));
        }
        return Decision::Install;
    }
    if kind == "fq" && tree.len() == 1 {
        // fq drops (or, with horizon_cap, sends early) packets scheduled
        // beyond its horizon; tc shows it in microseconds. Kernels before
        // 5.7 have no horizon at all.
        let horizon = root.pointer("/options/horizon").and_then(Value::as_u64).map(Duration::from_micros);
        if let Some(h) = horizon.filter(|h| *h < ahead) {
            return Decision::Refuse(format!(
                "{ifname} has an fq ({handle}) whose horizon, {:.1}s, is shorter than how far ahead this attack \
                 schedules packets ({:.1}s): it would drop them. Raise it (`tc qdisc change dev {ifname} root \
                 fq horizon {}s`) or shorten the delay",
                h.as_secs_f64(),
                ahead.as_secs_f64(),
                ahead.as_secs() + 1
            ));
        }
        return Decision::Reuse;
    }
    Decision::Refuse(format!(
        "{ifname} has a root qdisc chaos did not install ({}{}): chaos puts fq only in place of the \
         kernel's default qdisc, which it can restore exactly, and never replaces yours. Remove it for the \
         attack, or make the root an fq (`tc qdisc replace dev {ifname} root fq`), which chaos then uses as is",
        describe(root),
        if tree.len() > 1 { format!(" and {} more", tree.len() - 1) } else { String::new() }
    ))
}

/// An fq chaos uses on one device.
#[derive(Debug)]
pub struct Fq {
    pub netns: Netns,
    pub ifindex: u32,
    pub ifname: String,
    /// The qdisc chaos installed (None: someone else's fq, reused).
    installed: Option<Leftover>,
}

fn tc(netns: &Netns, args: &[String], stdin: Option<String>) -> Result<Output> {
    let owned = args.to_vec();
    netns
        .run(move || {
            let mut cmd = std::process::Command::new("tc");
            cmd.args(&owned).stdout(Stdio::piped()).stderr(Stdio::piped());
            let Some(input) = stdin else { return cmd.output() };
            let mut child = cmd.stdin(Stdio::piped()).spawn()?;
            // tc reads its batch to the end before running it; the pipe
            // holds a NIC's worth of lines.
            let mut pipe = child.stdin.take().expect("piped");
            pipe.write_all(input.as_bytes())?;
            drop(pipe);
            child.wait_with_output()
        })
        .and_then(|r| r)
        .map_err(|e| Error::kernel(format!("running tc {}", args.join(" ")), e))
}

fn tc_ok(netns: &Netns, args: &[String]) -> std::result::Result<String, String> {
    tc_in(netns, args, None)
}

fn tc_in(netns: &Netns, args: &[String], stdin: Option<String>) -> std::result::Result<String, String> {
    match tc(netns, args, stdin) {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// `tc -j qdisc show dev DEV`, trimmed.
pub fn snapshot(netns: &Netns, ifname: &str) -> Result<String> {
    let args = ["-j", "qdisc", "show", "dev", ifname].map(String::from);
    tc_ok(netns, &args).map_err(|e| {
        Error::kernel(format!("reading the qdiscs of {ifname} (netns {})", netns.inode), anyhow::anyhow!(e))
    })
}

/// The number of TX queues of `ifname` (`ip -d -j link show`); 1 if it
/// cannot be read (one fq at the root then, as before).
fn tx_queues(netns: &Netns, ifname: &str) -> u32 {
    let name = ifname.to_owned();
    let out = netns
        .run(move || {
            std::process::Command::new("ip").args(["-d", "-j", "link", "show", "dev", &name]).output()
        })
        .and_then(|r| r);
    let Ok(out) = out else { return 1 };
    let links: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    links
        .pointer("/0/num_tx_queues")
        .and_then(Value::as_u64)
        .map_or(1, |n| n.clamp(1, MAX_QUEUES.into()) as u32)
}

/// Queues beyond this share the last handles' range: chaos's children are
/// `c4a1:` to `c4a0 + n:`, below 0xffff (and no NIC has this many).
const MAX_QUEUES: u16 = 0xffff - 0xc4a0;

/// The handle of chaos's fq under mq class `c4a0:<queue>` (1-based).
fn child_handle(queue: u32) -> String {
    format!("{:x}:", 0xc4a0 + queue)
}

/// The `tc -batch` lines that install mq with one fq per queue.
fn mq_batch(ifname: &str, queues: u32) -> String {
    let fq = fq_options().join(" ");
    let mut lines = format!("qdisc add dev {ifname} root handle {HANDLE} mq\n");
    for q in 1..=queues {
        lines.push_str(&format!(
            "qdisc replace dev {ifname} parent {HANDLE}{q:x} handle {} {fq}\n",
            child_handle(q)
        ));
    }
    lines
}

/// Put fq at the root of `ifname` (or mq with one fq per TX queue, or reuse
/// the fq there), recording what chaos installs in the state file first.
pub fn install(
    netns: &Netns,
    ifindex: u32,
    ifname: &str,
    ahead: Duration,
    state: &mut StateFile,
) -> Result<Fq> {
    let before = snapshot(netns, ifname)?;
    let mut fq = Fq { netns: netns.clone(), ifindex, ifname: ifname.to_owned(), installed: None };
    match decide(ifname, &before, ahead) {
        Decision::Refuse(why) => return Err(Error::invalid(why)),
        Decision::Reuse => {
            tracing::info!(dev = ifname, "using the fq qdisc already there; chaos changes nothing on it");
            return Ok(fq);
        }
        Decision::Install => {}
    }
    let queues = tx_queues(netns, ifname);
    let leftover = Leftover::Qdisc {
        netns: netns.inode,
        ifindex,
        ifname: ifname.to_owned(),
        handle: HANDLE.to_owned(),
        before: before.clone(),
    };
    // Intent first: a kill from here on leaves a record whose restore finds
    // either chaos's qdisc (and removes it) or not (and closes the record).
    state.append(&Record::Leftover(leftover.clone()))?;
    let (args, stdin) = if queues > 1 {
        (["-batch", "-"].map(String::from).to_vec(), Some(mq_batch(ifname, queues)))
    } else {
        let mut args: Vec<String> =
            ["qdisc", "add", "dev", ifname, "root", "handle", HANDLE].map(String::from).into();
        args.extend(fq_options());
        (args, None)
    };
    if let Err(e) = tc_in(netns, &args, stdin.clone()) {
        // A batch that failed half-way may have left chaos's mq: undo it
        // the way recover would.
        // (If that fails too, the record stays for `chaos recover`.)
        if restore(netns, ifname, &before).is_ok() {
            state.append(&Record::Removed(leftover))?;
        }
        return Err(Error::kernel(
            format!("installing fq on {ifname} (netns {})", netns.inode),
            anyhow::anyhow!("tc {} {}: {e}", args.join(" "), stdin.unwrap_or_default().trim()),
        ));
    }
    tracing::info!(dev = ifname, netns = netns.inode, queues, "installed fq {HANDLE} (was: {before})");
    fq.installed = Some(leftover);
    Ok(fq)
}

/// Wait until chaos's fq qdiscs on the device hold no packet, or `until`
/// (the attack's own horizon: nothing it scheduled departs later). Returns
/// how many packets were still held when giving up — deleting the qdisc
/// drops them, and the caller says so.
pub fn drain(fq: &Fq, until: Instant) -> u64 {
    if fq.installed.is_none() {
        return 0; // someone's fq stays: nothing of it is deleted
    }
    let args = ["-s", "-j", "qdisc", "show", "dev", &fq.ifname].map(String::from);
    loop {
        // Unreadable (the device went away): nothing left to wait for.
        let held = tc_ok(&fq.netns, &args).map_or(0, |json| held_packets(&json));
        if held == 0 || Instant::now() >= until {
            return held;
        }
        std::thread::sleep(Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())));
    }
}

/// Packets queued in chaos's qdiscs, from `tc -s -j qdisc show`. Pure.
fn held_packets(json: &str) -> u64 {
    let Ok(Value::Array(all)) = serde_json::from_str::<Value>(json) else { return 0 };
    all.iter()
        .filter(|q| q.get("kind").and_then(Value::as_str) == Some("fq"))
        .filter(|q| q.get("handle").and_then(Value::as_str).is_some_and(|h| h.starts_with("c4a")))
        .filter_map(|q| q.get("qlen").and_then(Value::as_u64))
        .sum()
}

/// What restoring a device found and did.
#[derive(Debug, PartialEq, Eq)]
pub enum Restored {
    /// chaos's qdisc was there and is deleted. `differs`: the tree the
    /// kernel put back is not the snapshot's (kinds, handles, parents).
    Removed { differs: Option<String> },
    /// Something chaos did not install is at the root (or under chaos's
    /// mq): left as it is, for the reason given.
    Left(String),
    /// chaos's qdisc is not there and the device is as before (chaos died
    /// before creating it, or the device was reset), or the device is gone.
    Gone,
}

impl std::fmt::Display for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Removed { differs: None } => write!(f, "removed"),
            Self::Removed { differs: Some(d) } => write!(f, "removed ({d})"),
            Self::Left(why) => write!(f, "left: {why}"),
            Self::Gone => write!(f, "gone"),
        }
    }
}

/// Restore the device at the end of an attack: wait is done by the caller
/// ([`drain`]); delete chaos's qdisc if it is still there, and close the
/// record whatever was found.
pub fn release(fq: Fq, state: &mut StateFile) -> Result<()> {
    let Some(leftover) = fq.installed else { return Ok(()) };
    let Leftover::Qdisc { before, .. } = &leftover else { unreachable!("install records a qdisc") };
    let restored = match restore(&fq.netns, &fq.ifname, before) {
        Err(_) if Netns::find(fq.netns.inode).is_none() => Restored::Gone,
        other => other?,
    };
    match &restored {
        Restored::Removed { differs: None } | Restored::Gone => {
            tracing::info!(dev = fq.ifname, netns = fq.netns.inode, "qdiscs restored: {restored}");
        }
        _ => tracing::warn!(dev = fq.ifname, netns = fq.netns.inode, "restoring the qdiscs: {restored}"),
    }
    state.append(&Record::Removed(leftover))
}

/// Decide from what is on the device now (see the module documentation,
/// step 4) and act. Also used by `chaos recover`. An error is one that may
/// pass on retry (tc could not run, a netlink request failed).
pub fn restore(netns: &Netns, ifname: &str, before: &str) -> Result<Restored> {
    let now = match snapshot(netns, ifname) {
        Err(e) if is_gone(&e.to_string()) => return Ok(Restored::Gone),
        other => other?,
    };
    match chaos_tree(&now) {
        Ownership::Ours => {}
        Ownership::Absent => {
            return Ok(if structure(&now) == structure(before) {
                Restored::Gone
            } else {
                Restored::Left(format!("chaos's qdisc {HANDLE} is not there; {ifname} has {}", summary(&now)))
            });
        }
        Ownership::Changed(why) => {
            return Ok(Restored::Left(format!(
                "{why}; deleting chaos's {HANDLE} would take it too, so {ifname} is left as it is \
                 (remove it with `tc qdisc del dev {ifname} root` when done)"
            )));
        }
    }
    let args = ["qdisc", "del", "dev", ifname, "root", "handle", HANDLE].map(String::from);
    if let Err(e) = tc_ok(netns, &args) {
        if is_gone(&e) {
            return Ok(Restored::Gone);
        }
        return Err(Error::kernel(
            format!("restoring the qdiscs of {ifname} (netns {})", netns.inode),
            anyhow::anyhow!("tc {}: {e}", args.join(" ")),
        ));
    }
    let after = snapshot(netns, ifname).unwrap_or_default();
    let differs = (structure(&after) != structure(before)).then(|| {
        format!(
            "the kernel's default tree differs from before: was {}, now {}",
            summary(before),
            summary(&after)
        )
    });
    Ok(Restored::Removed { differs })
}

/// Whether the root of a snapshot is what chaos installs.
#[derive(Debug, PartialEq, Eq)]
enum Ownership {
    Ours,
    /// The root is not `c4a0:`.
    Absent,
    /// The root is `c4a0:`, but not as chaos made it.
    Changed(String),
}

fn chaos_tree(json: &str) -> Ownership {
    let tree = structure(json);
    let Some(root) = tree.iter().find(|q| q.root) else { return Ownership::Absent };
    if root.handle != HANDLE {
        return Ownership::Absent;
    }
    let children: Vec<&Node> = tree.iter().filter(|q| !q.root).collect();
    let foreign = match root.kind.as_str() {
        "fq" => children.first().copied(),
        // mq's own default children (handle 0:) until chaos replaced them,
        // chaos's fqs after.
        "mq" => children.into_iter().find(|q| {
            let fq = q.kind == "fq" && q.handle.starts_with("c4a") && q.handle != HANDLE;
            !q.parent.starts_with(HANDLE) || !(fq || q.handle == "0:")
        }),
        other => return Ownership::Changed(format!("the root {HANDLE} is now a {other}, not chaos's")),
    };
    match foreign {
        None => Ownership::Ours,
        Some(q) => Ownership::Changed(format!(
            "someone grafted {} {} (parent {}) under chaos's {} {HANDLE}",
            q.kind, q.handle, q.parent, root.kind
        )),
    }
}

/// The egress tree's shape: kind, handle, parent of each qdisc, without
/// options and counters, and without clsact/ingress (not part of it).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Node {
    kind: String,
    handle: String,
    parent: String,
    root: bool,
}

fn structure(json: &str) -> Vec<Node> {
    let Ok(Value::Array(all)) = serde_json::from_str::<Value>(json) else { return Vec::new() };
    let str_of = |q: &Value, k: &str| q.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut nodes: Vec<Node> = all
        .iter()
        .filter(|q| str_of(q, "parent") != "ffff:fff1")
        .map(|q| Node {
            kind: str_of(q, "kind"),
            handle: str_of(q, "handle"),
            parent: str_of(q, "parent"),
            root: q.get("root").and_then(Value::as_bool) == Some(true),
        })
        .collect();
    nodes.sort();
    nodes
}

fn summary(json: &str) -> String {
    let nodes = structure(json);
    if nodes.is_empty() {
        return "no qdisc".into();
    }
    nodes
        .iter()
        .map(|n| {
            if n.root {
                format!("{} {} root", n.kind, n.handle)
            } else {
                format!("{} {} parent {}", n.kind, n.handle, n.parent)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error that means the device or its namespace no longer exists.
pub fn is_gone(msg: &str) -> bool {
    msg.contains("Cannot find device") || msg.contains("No such device") || msg.contains("no longer refers")
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const NOQUEUE: &str = r#"[{"kind":"noqueue","handle":"0:","root":true,"refcnt":2,"options":{}}]"#;

    #[test]
    fn the_kernel_default_is_replaced_and_anything_else_refused() {
        assert_eq!(decide("veth0", NOQUEUE, S), Decision::Install);
        let with_clsact = r#"[{"kind":"noqueue","handle":"0:","root":true,"refcnt":2,"options":{}},{"kind":"clsact","handle":"ffff:","parent":"ffff:fff1","options":{}}]"#;
        assert_eq!(decide("veth0", with_clsact, S), Decision::Install);
        assert_eq!(decide("veth0", "[]", S), Decision::Install, "a down device shows no qdisc");
        let mq = r#"[{"kind":"mq","handle":"0:","root":true,"options":{}},{"kind":"fq_codel","handle":"0:","parent":":1","options":{}},{"kind":"fq_codel","handle":"0:","parent":":2","options":{}}]"#;
        assert_eq!(decide("eth0", mq, S), Decision::Install);
        let grafted = r#"[{"kind":"mq","handle":"0:","root":true,"options":{}},{"kind":"netem","handle":"8001:","parent":":1","options":{}}]"#;
        assert!(matches!(decide("eth0", grafted, S), Decision::Refuse(m) if m.contains("netem 8001:")));
        let htb = r#"[{"kind":"htb","handle":"1:","root":true,"refcnt":2,"options":{}}]"#;
        assert!(
            matches!(decide("eth0", htb, S), Decision::Refuse(m) if m.contains("htb 1:") && m.contains("never replaces"))
        );
        let users_fq = r#"[{"kind":"fq","handle":"8002:","root":true,"refcnt":2,"options":{}}]"#;
        assert_eq!(decide("eth0", users_fq, S), Decision::Reuse);
        // As tc 6.1 prints it: horizon in microseconds, flags as null.
        let horizon_10s = r#"[{"kind":"fq","handle":"8001:","root":true,"refcnt":3,"options":{"limit":10000,"flow_limit":100,"horizon":10000000,"horizon_drop":null}}]"#;
        assert_eq!(decide("eth0", horizon_10s, Duration::from_secs(9)), Decision::Reuse);
        assert!(
            matches!(decide("eth0", horizon_10s, Duration::from_secs(11)), Decision::Refuse(m) if m.contains("horizon"))
        );
        let ours = r#"[{"kind":"fq","handle":"c4a0:","root":true,"refcnt":2,"options":{}}]"#;
        assert!(
            matches!(decide("eth0", ours, S), Decision::Refuse(m) if m.contains("another chaos process"))
        );
        assert!(matches!(decide("eth0", "garbage", S), Decision::Refuse(_)));
    }

    const MQ_DEFAULT: &str = r#"[{"kind":"mq","handle":"0:","root":true,"options":{}},{"kind":"pfifo_fast","handle":"0:","parent":":1","options":{}},{"kind":"pfifo_fast","handle":"0:","parent":":2","options":{}}]"#;

    #[test]
    fn restore_decides_from_the_structure() {
        let fq = r#"[{"kind":"fq","handle":"c4a0:","root":true,"refcnt":2,"options":{"limit":100000}}]"#;
        assert_eq!(chaos_tree(fq), Ownership::Ours);
        // Counters, refcounts and the clsact beside it do not matter.
        let fq_clsact = r#"[{"kind":"fq","handle":"c4a0:","root":true,"refcnt":3,"options":{}},{"kind":"clsact","handle":"ffff:","parent":"ffff:fff1","options":{}}]"#;
        assert_eq!(chaos_tree(fq_clsact), Ownership::Ours);
        let mq = r#"[{"kind":"mq","handle":"c4a0:","root":true,"options":{}},{"kind":"fq","handle":"c4a1:","parent":"c4a0:1","options":{}},{"kind":"fq","handle":"c4a2:","parent":"c4a0:2","options":{}}]"#;
        assert_eq!(chaos_tree(mq), Ownership::Ours);
        // Killed half-way through the batch: mq's own defaults remain.
        let half = r#"[{"kind":"mq","handle":"c4a0:","root":true,"options":{}},{"kind":"fq","handle":"c4a1:","parent":"c4a0:1","options":{}},{"kind":"pfifo_fast","handle":"0:","parent":"c4a0:2","options":{}}]"#;
        assert_eq!(chaos_tree(half), Ownership::Ours);
        let grafted = r#"[{"kind":"mq","handle":"c4a0:","root":true,"options":{}},{"kind":"netem","handle":"8001:","parent":"c4a0:1","options":{}}]"#;
        assert!(matches!(chaos_tree(grafted), Ownership::Changed(m) if m.contains("netem 8001:")));
        let replaced = r#"[{"kind":"fq","handle":"8003:","root":true,"options":{}}]"#;
        assert_eq!(chaos_tree(replaced), Ownership::Absent);
        assert_eq!(chaos_tree(NOQUEUE), Ownership::Absent);
        // Byte-different, structurally equal: the same tree.
        let noqueue_other_bytes = r#"[{"kind":"noqueue","handle":"0:","root":true,"refcnt":7,"options":{}}]"#;
        assert_eq!(structure(NOQUEUE), structure(noqueue_other_bytes));
        assert_ne!(structure(NOQUEUE), structure(MQ_DEFAULT));
        assert!(summary(replaced).contains("fq 8003: root"));
    }

    #[test]
    fn mq_gets_one_fq_per_queue_and_held_packets_count_only_chaos_fqs() {
        let batch = mq_batch("eth0", 3);
        let lines: Vec<&str> = batch.lines().collect();
        assert_eq!(lines[0], "qdisc add dev eth0 root handle c4a0: mq");
        assert_eq!(lines.len(), 4);
        assert!(
            lines[3].starts_with("qdisc replace dev eth0 parent c4a0:3 handle c4a3: fq limit"),
            "{}",
            lines[3]
        );
        assert_eq!(child_handle(10), "c4aa:");
        let stats = r#"[{"kind":"mq","handle":"c4a0:","root":true,"qlen":0},{"kind":"fq","handle":"c4a1:","parent":"c4a0:1","qlen":3},{"kind":"fq","handle":"c4a2:","parent":"c4a0:2","qlen":4},{"kind":"fq","handle":"8001:","parent":"1:1","qlen":50}]"#;
        assert_eq!(held_packets(stats), 7);
        assert_eq!(held_packets("garbage"), 0);
    }

    #[test]
    fn fq_horizon_covers_every_departure_chaos_sets() {
        let opts = fq_options();
        let at = opts.iter().position(|o| o == "horizon").unwrap();
        let secs: u64 = opts[at + 1].trim_end_matches('s').parse().unwrap();
        assert!(Duration::from_secs(secs) > MAX_DEPARTURE_AHEAD);
    }
}
