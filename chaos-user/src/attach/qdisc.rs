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
//!    kernel attach the default again (`qdisc_graft` -> `dev_activate`), so
//!    that state can be restored exactly, by deleting ours. A root fq that
//!    someone else installed is used as it is, and left alone. Anything else
//!    (htb, tbf, netem, prio, a modified default tree) is refused with a
//!    message: chaos could not put it back faithfully.
//! 2. The state file records the qdisc (with the snapshot) *before* it is
//!    created; `tc qdisc add ... root handle c4a0:` fails with EEXIST if
//!    someone installed a root qdisc meanwhile.
//! 3. Restoring deletes the root only if it still is ours (`tc qdisc del ...
//!    root handle c4a0:` checks the handle) and then compares `tc -j qdisc
//!    show` with the snapshot, byte for byte; a difference is an error.
//!
//! Commands run in the device's network namespace (`Netns::run`: `tc`
//! inherits the namespace of the thread that forks it).

use std::{process::Output, time::Duration};

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

fn tc(netns: &Netns, args: &[String]) -> Result<Output> {
    let owned = args.to_vec();
    netns
        .run(move || std::process::Command::new("tc").args(&owned).output())
        .and_then(|r| r)
        .map_err(|e| Error::kernel(format!("running tc {}", args.join(" ")), e))
}

fn tc_ok(netns: &Netns, args: &[String]) -> std::result::Result<String, String> {
    match tc(netns, args) {
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

/// Put fq at the root of `ifname` (or reuse the fq there), recording what
/// chaos installs in the state file first.
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
    let leftover = Leftover::Qdisc {
        netns: netns.inode,
        ifindex,
        ifname: ifname.to_owned(),
        handle: HANDLE.to_owned(),
        before: before.clone(),
    };
    state.append(&Record::Leftover(leftover.clone()))?;
    let mut args: Vec<String> =
        ["qdisc", "add", "dev", ifname, "root", "handle", HANDLE].map(String::from).into();
    args.extend(fq_options());
    if let Err(e) = tc_ok(netns, &args) {
        state.append(&Record::Removed(leftover))?;
        return Err(Error::kernel(
            format!("installing fq on {ifname} (netns {})", netns.inode),
            anyhow::anyhow!("tc {}: {e}", args.join(" ")),
        ));
    }
    tracing::info!(dev = ifname, netns = netns.inode, "installed fq {HANDLE} (was: {before})");
    fq.installed = Some(leftover);
    Ok(fq)
}

/// Restore the device: delete chaos's fq (the kernel puts its default back)
/// and check the qdiscs are what they were.
pub fn release(fq: Fq, state: &mut StateFile) -> Result<()> {
    let Some(leftover) = fq.installed else { return Ok(()) };
    let Leftover::Qdisc { before, .. } = &leftover else { unreachable!("install records a qdisc") };
    let result = restore(&fq.netns, &fq.ifname, before);
    match &result {
        Ok(()) => state.append(&Record::Removed(leftover))?,
        // The device or its namespace is gone, and the qdisc with it (a
        // container that exited): nothing left to restore.
        Err(e) if is_gone(&e.to_string()) || Netns::find(fq.netns.inode).is_none() => {
            tracing::info!(dev = fq.ifname, "its network namespace or device is gone, and the fq with it");
            state.append(&Record::Removed(leftover))?;
            return Ok(());
        }
        Err(_) => {}
    }
    result
}

/// Delete the root qdisc of `ifname` if it is chaos's, then compare with
/// `before`. Also used by `chaos recover`.
pub fn restore(netns: &Netns, ifname: &str, before: &str) -> Result<()> {
    let context = || format!("restoring the qdiscs of {ifname} (netns {})", netns.inode);
    let args = ["qdisc", "del", "dev", ifname, "root", "handle", HANDLE].map(String::from);
    if let Err(e) = tc_ok(netns, &args) {
        let now = snapshot(netns, ifname).unwrap_or_default();
        // Already gone (a previous attempt, or the device was reset): fine
        // if what is there is what was there.
        if now != before {
            return Err(Error::kernel(context(), anyhow::anyhow!("tc {}: {e}", args.join(" "))));
        }
    }
    let after = snapshot(netns, ifname)?;
    if after != before {
        return Err(Error::kernel(
            context(),
            anyhow::anyhow!("the qdiscs differ from before the attack: before {before}, now {after}"),
        ));
    }
    tracing::info!(dev = ifname, netns = netns.inode, "restored the qdiscs: {after}");
    Ok(())
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

    #[test]
    fn fq_horizon_covers_every_departure_chaos_sets() {
        let opts = fq_options();
        let at = opts.iter().position(|o| o == "horizon").unwrap();
        let secs: u64 = opts[at + 1].trim_end_matches('s').parse().unwrap();
        assert!(Duration::from_secs(secs) > MAX_DEPARTURE_AHEAD);
    }
}
