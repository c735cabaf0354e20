//! The fault kinds an experiment file may name, their parameters, and how
//! each becomes a [`Fault`]: the one place to extend when a fault lands.

use std::{path::PathBuf, str::FromStr};

use super::{Conv, Fields};
use crate::{
    faults::{
        Direction, Distribution, Errno, Fault, IoError, IoOp, NetEffects, NetFault, NetFilter, NetKind,
        NetLoss, PathsIn, Protocol,
    },
    units::{Cidr, Percent, Rate},
};

/// A fault kind a file may name: its parameters (beyond the fields every
/// step has) and how to build it from them.
pub(super) struct FaultKind {
    pub name: &'static str,
    pub params: &'static [&'static str],
    pub build: fn(&mut Conv, &Fields<'_>) -> Option<Built>,
}

/// A fault and the attack settings that come with its parameters.
pub(super) struct Built {
    pub fault: Fault,
    pub interfaces: Vec<String>,
}

/// Every fault kind experiment files can use. Keep in step with
/// [`crate::faults::Fault`].
pub(super) const FAULTS: &[FaultKind] = &[
    FaultKind {
        name: "net-loss",
        params: &["percent", "direction", "cidr", "port", "protocol", "interfaces"],
        build: net_loss,
    },
    FaultKind {
        name: "io-error",
        params: &["errno", "percent", "paths", "paths-in", "operations", "after", "first"],
        build: io_error,
    },
    FaultKind {
        name: "net-delay",
        params: NET_EFFECT_PARAMS,
        build: |c, f| net_effects(NetKind::Delay, c, f),
    },
    FaultKind { name: "net-rate", params: NET_EFFECT_PARAMS, build: |c, f| net_effects(NetKind::Rate, c, f) },
    FaultKind {
        name: "net-duplicate",
        params: NET_EFFECT_PARAMS,
        build: |c, f| net_effects(NetKind::Duplicate, c, f),
    },
    FaultKind {
        name: "net-corrupt",
        params: NET_EFFECT_PARAMS,
        build: |c, f| net_effects(NetKind::Corrupt, c, f),
    },
    FaultKind {
        name: "net-reorder",
        params: NET_EFFECT_PARAMS,
        build: |c, f| net_effects(NetKind::Reorder, c, f),
    },
    FaultKind { name: "clock-skew", params: &["offset", "clocks"], build: clock_skew },
];

/// The parameters of the netem-like kinds: `chaos attack net-delay`'s flags.
const NET_EFFECT_PARAMS: &[&str] = &[
    "delay",
    "jitter",
    "distribution",
    "rate",
    "loss",
    "duplicate",
    "corrupt",
    "reorder",
    "direction",
    "cidr",
    "port",
    "protocol",
    "interfaces",
];

/// Fault kinds on the roadmap: named in messages so that a file written for
/// a later chaos says what is missing rather than "unknown".
pub(super) const PLANNED: &[&str] = &["net-blackhole"];

/// Fields of every attack step.
pub(super) const STEP_FIELDS: &[&str] = &["name", "fault", "target", "duration", "start-after"];

fn net_loss(c: &mut Conv, f: &Fields<'_>) -> Option<Built> {
    let percent = c.required(f, "percent").and_then(|n| c.typed(n, "percent", Percent::from_str));
    let direction =
        f.get("direction").map_or(Some(Direction::Both), |n| c.choice::<Direction>(n, "direction"));
    let protocol = f.get("protocol").map_or(Some(Protocol::Any), |n| c.choice::<Protocol>(n, "protocol"));
    let cidr = f.get("cidr").map(|n| c.typed(n, "cidr", Cidr::from_str));
    let port = f.get("port").map(|n| c.port(n));
    let interfaces = f.get("interfaces").map(|n| c.string_list(n, "interfaces")).unwrap_or(Some(Vec::new()));
    let (percent, direction, protocol, interfaces) = (percent?, direction?, protocol?, interfaces?);
    if !interfaces.is_empty() && !direction.egress() {
        let at = f.key_span("interfaces").unwrap_or(f.at);
        c.err(
            at,
            "`interfaces` applies to egress, and this attack is ingress only".into(),
            Some("drop `interfaces`, or use `direction: egress` or `both`".into()),
        );
    }
    let filter = NetFilter { direction, cidr: cidr.flatten(), port: port.flatten(), protocol };
    Some(Built { fault: Fault::NetLoss(NetLoss { percent, filter }), interfaces })
}

/// `net-delay`, `net-rate`, `net-duplicate`, `net-corrupt`, `net-reorder`:
/// the flags of `chaos attack net-<kind>`, as fields, checked as the
/// command line checks them (every problem at once, at the step).
fn net_effects(kind: NetKind, c: &mut Conv, f: &Fields<'_>) -> Option<Built> {
    let percent = |c: &mut Conv, key: &str| f.get(key).map(|n| c.typed(n, key, Percent::from_str));
    let delay = f.get("delay").map(|n| c.duration(n, "delay"));
    let jitter = f.get("jitter").map(|n| c.duration(n, "jitter"));
    let distribution = f.get("distribution").map(|n| c.choice::<Distribution>(n, "distribution"));
    let rate = f.get("rate").map(|n| c.typed(n, "rate", Rate::from_str));
    let (loss, duplicate) = (percent(c, "loss"), percent(c, "duplicate"));
    let (corrupt, reorder) = (percent(c, "corrupt"), percent(c, "reorder"));
    let direction =
        f.get("direction").map_or(Some(Direction::Egress), |n| c.choice::<Direction>(n, "direction"));
    let protocol = f.get("protocol").map_or(Some(Protocol::Any), |n| c.choice::<Protocol>(n, "protocol"));
    let cidr = f.get("cidr").map(|n| c.typed(n, "cidr", Cidr::from_str));
    let port = f.get("port").map(|n| c.port(n));
    let interfaces = f.get("interfaces").map(|n| c.string_list(n, "interfaces")).unwrap_or(Some(Vec::new()));
    let effects = NetEffects {
        loss: given(loss).ok()?,
        delay: given(delay).ok()?,
        jitter: given(jitter).ok()?,
        distribution: given(distribution).ok()?,
        rate: given(rate).ok()?,
        duplicate: given(duplicate).ok()?,
        corrupt: given(corrupt).ok()?,
        reorder: given(reorder).ok()?,
    };
    let filter = NetFilter {
        direction: direction?,
        cidr: given(cidr).ok()?,
        port: given(port).ok()?,
        protocol: protocol?,
    };
    let interfaces = interfaces?;
    match NetFault::new(kind, effects, filter) {
        Ok(fault) => Some(Built { fault: Fault::net(kind, fault), interfaces }),
        Err(problems) => {
            // The command line's messages name flags; a file has fields.
            let message = problems.join("; ").replace("--", "");
            c.err(f.at, format!("{}: {message}", kind.name()), None);
            None
        }
    }
}

/// An optional field: absent is `Ok(None)`; present but invalid (already
/// reported) is `Err`.
fn given<T>(field: Option<Option<T>>) -> Result<Option<T>, ()> {
    match field {
        None => Ok(None),
        Some(Some(v)) => Ok(Some(v)),
        Some(None) => Err(()),
    }
}

/// `io-error`: the flags of `chaos attack io-error`, as fields. Paths must
/// be absolute (a file is not run from a known directory).
fn io_error(c: &mut Conv, f: &Fields<'_>) -> Option<Built> {
    let whole = |what: &'static str| {
        move |t: &str| t.parse::<u64>().map_err(|_| format!("`{t}` is not a whole number ({what})"))
    };
    let errno = c.required(f, "errno").and_then(|n| c.typed(n, "errno", Errno::from_str));
    let percent = c.required(f, "percent").and_then(|n| c.typed(n, "percent", Percent::from_str));
    // One path, or a list of them.
    let paths = c.required(f, "paths").and_then(|n| match n.as_seq() {
        Some(_) => c.string_list(n, "paths"),
        None => c.string(n, "paths").map(|p| vec![p]),
    });
    let paths_in = f.get("paths-in").map_or(Some(PathsIn::Target), |n| c.choice::<PathsIn>(n, "paths-in"));
    // A list, or one value with commas as on the command line ("read,write").
    let operations = match f.get("operations") {
        None => Some(Vec::new()),
        Some(n) if n.as_seq().is_some() => c.list(n, "operations").and_then(|items| {
            let ops: Vec<Option<IoOp>> = items.iter().map(|i| c.choice::<IoOp>(i, "operations")).collect();
            ops.into_iter().collect()
        }),
        Some(n) => c.typed(n, "operations", |t| t.split(',').map(IoOp::from_str).collect()),
    };
    let after = f.get("after").map_or(Some(0), |n| c.typed(n, "after", whole("calls to let through")));
    let first = f.get("first").map(|n| c.typed(n, "first", whole("calls that may fail")));
    let (errno, percent, paths, paths_in, operations, after) =
        (errno?, percent?, paths?, paths_in?, operations?, after?);
    let first = match first {
        Some(v) => Some(v?),
        None => None,
    };
    if let Some(rel) = paths.iter().find(|p| !p.starts_with('/')) {
        let at = f.key_span("paths").unwrap_or(f.at);
        c.err(
            at,
            format!("`paths`: {rel} is relative"),
            Some("give absolute paths, e.g. /var/lib/data".into()),
        );
        return None;
    }
    let paths = paths.into_iter().map(PathBuf::from).collect();
    match IoError::new(errno, percent, paths, paths_in, operations, after, first) {
        Ok(fault) => Some(Built { fault: Fault::IoError(fault), interfaces: Vec::new() }),
        Err(e) => {
            c.err(f.at, format!("io-error: {e}"), None);
            None
        }
    }
}

/// `clock-skew`: the flags of `chaos attack clock-skew`, as fields.
/// `clocks` is one clock or a list of them.
fn clock_skew(c: &mut Conv, f: &Fields<'_>) -> Option<Built> {
    let offset = c.required(f, "offset").and_then(|n| c.typed(n, "offset", crate::faults::Offset::from_str));
    let clocks = match f.get("clocks") {
        None => Some(Vec::new()),
        Some(n) => match n.as_seq() {
            Some(items) => {
                let all: Vec<Option<crate::faults::SkewClock>> =
                    items.iter().map(|i| c.typed(i, "clocks", crate::faults::SkewClock::from_str)).collect();
                all.into_iter().collect()
            }
            None => c.typed(n, "clocks", crate::faults::SkewClock::from_str).map(|one| vec![one]),
        },
    };
    let (offset, clocks) = (offset?, clocks?);
    match crate::faults::ClockSkew::new(offset, clocks) {
        Ok(fault) => Some(Built { fault: Fault::ClockSkew(fault), interfaces: Vec::new() }),
        Err(e) => {
            let at = f.key_span("offset").unwrap_or(f.at);
            c.err(at, format!("clock-skew: {e}"), None);
            None
        }
    }
}

pub(super) fn kinds() -> String {
    FAULTS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// Every fault kind name an experiment file accepts.
pub fn fault_kinds() -> impl Iterator<Item = &'static str> {
    FAULTS.iter().map(|k| k.name)
}
