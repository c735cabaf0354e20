//! Network faults and their filters.
//!
//! `net-loss` is loss alone, in either direction. The other network faults
//! (`net-delay`, `net-rate`, `net-duplicate`, `net-corrupt`, `net-reorder`)
//! are one [`NetFault`]: a primary effect, named by the fault, plus any of
//! the others, combined in one rule as netem's options are.

use std::{net::IpAddr, time::Duration};

use chaos_abi::net::{
    DIR_EGRESS, DIR_INGRESS, DIST_NORMAL, DIST_UNIFORM, FAMILY_ANY, FAMILY_SET, FAMILY_V4, FAMILY_V6,
    FLAG_FLOW_PER_PACKET, FLAG_SCHEDULE, JITTER_TABLE_SHIFT, JITTER_TABLE_SIZE, LOSS_ALWAYS,
    MAX_PEERS_PER_ATTACK, NetPeer, NetRule, PEER_KEY_FIXED_BITS, PeerKey,
};
use serde::Serialize;

use crate::units::{Cidr, Percent, Rate, format_duration};

/// Which packets of the target: those it sends, receives, or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Egress,
    Ingress,
    #[default]
    Both,
}

impl Direction {
    pub fn bits(self) -> u8 {
        match self {
            Self::Egress => DIR_EGRESS,
            Self::Ingress => DIR_INGRESS,
            Self::Both => DIR_EGRESS | DIR_INGRESS,
        }
    }

    pub fn egress(self) -> bool {
        self.bits() & DIR_EGRESS != 0
    }

    pub fn ingress(self) -> bool {
        self.bits() & DIR_INGRESS != 0
    }
}

/// Limit a network fault to some packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
}

impl Protocol {
    /// IP protocol number; 0 = any. ICMP matches ICMPv6 too only when the
    /// rule is IPv6-only (`--cidr` of that family).
    fn number(self, v6: bool) -> u8 {
        match self {
            Self::Any => 0,
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Icmp if v6 => 58,
            Self::Icmp => 1,
        }
    }
}

/// Which packets of the target a network fault applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetFilter {
    pub direction: Direction,
    /// The peer networks (any of them): destination of sent packets,
    /// source of received ones. Empty: every peer.
    #[serde(rename = "cidr", skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<Cidr>,
    /// Source or destination port, either side of the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub protocol: Protocol,
}

/// `net-loss`: drop packets with a probability, silently, as a lossy link.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetLoss {
    pub percent: Percent,
    /// Lose packets in bursts of this many on average (see
    /// [`NetLoss::burst_thresholds`]); independently when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
    #[serde(flatten)]
    pub filter: NetFilter,
    /// Devices its egress side acts on; every device of the target's
    /// network namespaces when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
}

impl NetFilter {
    /// Whether the rule's peers are a set in the trie (several networks)
    /// rather than its inline one: [`Self::apply`] marks the rule so, and
    /// [`Self::peer_keys`] gives the set's entries, by this one decision.
    fn peers_in_set(&self) -> bool {
        self.cidrs.len() >= 2
    }

    /// Write the filter fields of a rule.
    pub fn apply(&self, rule: &mut NetRule) {
        rule.directions = self.direction.bits();
        rule.port = self.port.unwrap_or(0);
        let v6 = !self.cidrs.is_empty() && self.cidrs.iter().all(|c| c.addr.is_ipv6());
        rule.protocol = self.protocol.number(v6);
        rule.peer = match self.cidrs[..] {
            _ if self.peers_in_set() => NetPeer { family: FAMILY_SET, ..Default::default() },
            [one] => peer(one),
            _ => NetPeer { family: FAMILY_ANY, ..Default::default() },
        };
    }

    /// Check the peer networks: at most [`MAX_PEERS_PER_ATTACK`], each
    /// once.
    pub fn check(&self) -> Result<(), String> {
        if self.cidrs.len() > MAX_PEERS_PER_ATTACK as usize {
            return Err(format!(
                "{} --cidr given, at most {MAX_PEERS_PER_ATTACK} per attack; merge them into wider networks",
                self.cidrs.len()
            ));
        }
        // One ICMP protocol number per rule: ICMPv6 when every network is
        // IPv6, ICMPv4 otherwise (see `apply`).
        let families =
            (self.cidrs.iter().any(|c| c.addr.is_ipv4()), self.cidrs.iter().any(|c| c.addr.is_ipv6()));
        if self.protocol == Protocol::Icmp && families == (true, true) {
            return Err("--protocol icmp with both IPv4 and IPv6 --cidr networks: ICMP and ICMPv6 are two \
                        protocols; give the networks of one family per attack"
                .into());
        }
        // The same network however written (10.1.2.3/24 is 10.1.2.0/24):
        // one entry of the trie, which the first removal would take.
        let network = |c: &Cidr| (peer(*c), c.prefix);
        for (i, c) in self.cidrs.iter().enumerate() {
            if let Some(same) = self.cidrs[..i].iter().find(|d| network(d) == network(c)) {
                return Err(format!("--cidr {c} is the same network as {same}; give each network once"));
            }
        }
        Ok(())
    }

    /// The [`PEERS`](chaos_abi::net::PEERS) entries of an attack in `slot`
    /// whose rule has [`FAMILY_SET`]: none otherwise.
    pub fn peer_keys(&self, slot: u32) -> Vec<(u32, PeerKey)> {
        if !self.peers_in_set() {
            return Vec::new();
        }
        self.cidrs
            .iter()
            .map(|&c| {
                let p = peer(c);
                let bits = if p.family == FAMILY_V4 { 32 } else { 128 };
                let data = PeerKey { slot_be: slot.to_be(), family_be: p.family.to_be(), addr: p.addr };
                (PEER_KEY_FIXED_BITS + u32::from(c.prefix).min(bits), data)
            })
            .collect()
    }
}

/// The longest mean burst `--burst` accepts, in packets.
pub const MAX_BURST: f64 = 1e6;

impl NetLoss {
    /// The fault; every problem in one message.
    pub fn new(
        percent: Percent,
        burst: Option<f64>,
        filter: NetFilter,
        interfaces: Vec<String>,
    ) -> Result<Self, String> {
        filter.check()?;
        if let Some(b) = burst {
            let loss = percent.value() / 100.0;
            if !(loss > 0.0 && loss < 1.0) {
                return Err(format!(
                    "--burst needs a loss strictly between 0 and 100% (bursts of a link that loses {percent} \
                     have no length); change --percent or drop --burst"
                ));
            }
            // Independent loss at rate L already has bursts of mean
            // 1/(1-L) (geometric); a shorter mean would need losses that
            // avoid each other, which the Gilbert model cannot give.
            let shortest = 1.0 / (1.0 - loss);
            if !(b.is_finite() && b >= shortest - 1e-9 && b <= MAX_BURST) {
                return Err(format!(
                    "--burst {b}: at {percent} loss, bursts average between {shortest:.3} packets (independent \
                     losses) and {MAX_BURST} packets; give a --burst in that range"
                ));
            }
        }
        Ok(Self { percent, burst, filter, interfaces })
    }

    pub fn rule(&self, deadline_ns: u64, slot: u32) -> NetRule {
        let mut rule =
            NetRule { deadline_ns, loss_threshold: self.percent.threshold(), slot, ..Default::default() };
        if let Some((enter, leave)) = self.burst_thresholds() {
            rule.burst_enter_threshold = enter;
            rule.burst_leave_threshold = leave;
        }
        self.filter.apply(&mut rule);
        rule
    }

    /// The Gilbert model's transition probabilities (p: good → bad, r: bad
    /// → good) as thresholds on the [`LOSS_ALWAYS`] scale, for a loss rate
    /// L in bursts of mean B packets: r = 1/B, and p = r·L/(1-L) so that
    /// the stationary share of the bad state, p/(p+r), is L. This is
    /// netem's `loss gemodel p r` (1-h = 100%, 1-k = 0%).
    pub fn burst_thresholds(&self) -> Option<(u64, u64)> {
        let b = self.burst?;
        let loss = self.percent.value() / 100.0;
        let r = 1.0 / b;
        let p = r * loss / (1.0 - loss);
        let threshold = |x: f64| ((x * LOSS_ALWAYS as f64).round() as u64).clamp(1, LOSS_ALWAYS);
        Some((threshold(p), threshold(r)))
    }
}

/// How jitter spreads the delay: uniform in `[delay - jitter, delay +
/// jitter]` (netem's default), or normal with standard deviation `jitter`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    #[default]
    Uniform,
    Normal,
}

/// The effect a network fault is named after (`chaos attack net-<kind>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetKind {
    Delay,
    Rate,
    Duplicate,
    Corrupt,
    Reorder,
}

impl NetKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Delay => "net-delay",
            Self::Rate => "net-rate",
            Self::Duplicate => "net-duplicate",
            Self::Corrupt => "net-corrupt",
            Self::Reorder => "net-reorder",
        }
    }

    /// The kind named `name` (`net-delay`...).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Delay, Self::Rate, Self::Duplicate, Self::Corrupt, Self::Reorder]
            .into_iter()
            .find(|k| k.name() == name)
    }

    /// The flag that names the primary effect.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Delay => "--delay",
            Self::Rate => "--rate",
            Self::Duplicate => "--duplicate",
            Self::Corrupt => "--corrupt",
            Self::Reorder => "--reorder",
        }
    }
}

/// Longest delay, and largest jitter, chaos accepts: every departure time
/// it sets stays below [`MAX_DEPARTURE_AHEAD`], the horizon of the fq
/// qdisc it installs.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// Slowest rate: a 64 KiB GSO packet must fit the rate limiter's buffer.
pub const MIN_RATE_BPS: u64 = 100_000;
/// The rate limiter's buffer: packets that would leave later than this
/// from now are dropped (silently, as by a full router queue) — or twice
/// the time a 64 KiB GSO packet takes at the rate, if longer.
pub const RATE_BACKLOG: Duration = Duration::from_secs(1);
/// The largest |quantile| in the normal jitter table (its last entry,
/// Φ⁻¹(1 - 0.5/4096) ≈ 3.67): a normal jitter of σ moves a packet by at
/// most this many σ.
pub const NORMAL_TABLE_MAX_SIGMAS: f64 = 3.7;
/// How far ahead of now chaos may schedule a packet: delay + the largest
/// jitter + the rate backlog, bounded by the limits above (10 + 37 + 10.5 s).
pub const MAX_DEPARTURE_AHEAD: Duration = Duration::from_secs(58);

/// Effects of a network fault; at least one is set. Loss acts first (a lost
/// packet has no other effect); a duplicate is an independent copy with
/// its own corruption, delay and reorder rolls; a reordered packet skips
/// the delay and the rate limiter, as in netem.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NetEffects {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<Percent>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_duration")]
    pub delay: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_duration")]
    pub jitter: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<Percent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<Percent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reorder: Option<Percent>,
}

pub(super) fn opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

/// A network fault of either shape: what the net family's injector takes.
#[derive(Clone, Debug, PartialEq)]
pub enum NetAny {
    Loss(NetLoss),
    Effects(NetFault),
}

impl NetAny {
    pub fn rule(&self, deadline_ns: u64, slot: u32) -> NetRule {
        match self {
            Self::Loss(f) => f.rule(deadline_ns, slot),
            Self::Effects(f) => f.rule(deadline_ns, slot),
        }
    }

    /// The netem-like effects (not `net-loss`).
    pub fn effects(&self) -> Option<&NetFault> {
        match self {
            Self::Loss(_) => None,
            Self::Effects(f) => Some(f),
        }
    }

    pub fn filter(&self) -> &NetFilter {
        match self {
            Self::Loss(f) => &f.filter,
            Self::Effects(f) => &f.filter,
        }
    }

    /// The devices named (`--interface`); empty: the fault's default.
    pub fn interfaces(&self) -> &[String] {
        match self {
            Self::Loss(f) => &f.interfaces,
            Self::Effects(f) => &f.interfaces,
        }
    }

    /// Packets get departure times (delay, rate, reorder): fq needed.
    pub fn schedules(&self) -> bool {
        self.effects().is_some_and(NetFault::schedules)
    }

    /// Effects beyond loss on what the target receives: the ifb queue and
    /// the tc ingress classifier (loss alone stays at the socket).
    pub fn receives(&self) -> bool {
        self.effects().is_some() && self.filter().direction.ingress()
    }
}

/// `net-delay`, `net-rate`, `net-duplicate`, `net-corrupt`, `net-reorder`:
/// netem's effects on what the target sends, receives, or both.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetFault {
    #[serde(flatten)]
    pub effects: NetEffects,
    #[serde(flatten)]
    pub filter: NetFilter,
    /// Devices it acts on; when empty, the devices that are up, except
    /// loopback (see the injector).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
}

impl NetFault {
    /// Validate: every problem at once, each naming the flag and the fix.
    pub fn new(kind: NetKind, effects: NetEffects, filter: NetFilter) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let e = &effects;
        let primary = match kind {
            NetKind::Delay => e.delay.is_some(),
            NetKind::Rate => e.rate.is_some(),
            NetKind::Duplicate => e.duplicate.is_some(),
            NetKind::Corrupt => e.corrupt.is_some(),
            NetKind::Reorder => e.reorder.is_some(),
        };
        if !primary {
            problems.push(format!("{} needs {}", kind.name(), kind.flag()));
        }
        if let Err(e) = filter.check() {
            problems.push(e);
        }
        if e.delay.is_some_and(|d| d > MAX_DELAY) {
            problems.push(format!("--delay is at most {}", format_duration(MAX_DELAY)));
        }
        if kind == NetKind::Delay && e.delay.is_some_and(|d| d.is_zero()) {
            problems.push("--delay 0 delays nothing; give e.g. --delay 50ms".into());
        }
        match (e.jitter, e.delay) {
            (Some(_), None) => problems.push("--jitter needs --delay (jitter spreads a delay)".into()),
            (Some(j), _) if j > MAX_DELAY => {
                problems.push(format!("--jitter is at most {}", format_duration(MAX_DELAY)));
            }
            _ => {}
        }
        if e.distribution.is_some() && e.jitter.is_none_or(|j| j.is_zero()) {
            problems.push("--distribution needs --jitter (it is the jitter's distribution)".into());
        }
        if e.reorder.is_some() && e.delay.is_none_or(|d| d.is_zero()) {
            problems.push(
                "--reorder needs --delay: a reordered packet is one sent at once, past the delayed ones"
                    .into(),
            );
        }
        if e.rate.is_some_and(|r| r.bits_per_second < MIN_RATE_BPS) {
            problems.push("--rate is at least 100kbit".into());
        }
        if problems.is_empty() { Ok(Self { effects, filter, interfaces: Vec::new() }) } else { Err(problems) }
    }

    /// Whether packets get departure times (and so need fq on the device).
    pub fn schedules(&self) -> bool {
        let e = &self.effects;
        e.delay.is_some_and(|d| !d.is_zero()) || e.rate.is_some() || e.reorder.is_some()
    }

    /// How long after the rule goes the last packet it scheduled may still
    /// be waiting in fq.
    pub fn max_departure_ahead(&self) -> Duration {
        let e = &self.effects;
        let jitter = e.jitter.unwrap_or_default();
        let spread = match e.distribution.unwrap_or_default() {
            Distribution::Uniform => jitter,
            Distribution::Normal => jitter.mul_f64(NORMAL_TABLE_MAX_SIGMAS),
        };
        e.delay.unwrap_or_default() + spread + e.rate.map_or(Duration::ZERO, rate_backlog)
    }

    pub fn rule(&self, deadline_ns: u64, slot: u32) -> NetRule {
        let e = &self.effects;
        let threshold = |p: Option<Percent>| p.map_or(0, Percent::threshold);
        let jitter = e.jitter.unwrap_or_default();
        let mut flags = 0;
        if self.schedules() {
            flags |= FLAG_SCHEDULE;
        }
        if self.schedules() && (!jitter.is_zero() || e.reorder.is_some()) {
            flags |= FLAG_FLOW_PER_PACKET;
        }
        let mut rule = NetRule {
            deadline_ns,
            slot,
            loss_threshold: threshold(e.loss),
            flags,
            delay_ns: e.delay.unwrap_or_default().as_nanos() as u64,
            jitter_ns: jitter.as_nanos() as u64,
            rate_bps: e.rate.map_or(0, |r| r.bits_per_second),
            rate_backlog_ns: e.rate.map_or(0, |r| rate_backlog(r).as_nanos() as u64),
            duplicate_threshold: threshold(e.duplicate),
            corrupt_threshold: threshold(e.corrupt),
            reorder_threshold: threshold(e.reorder),
            distribution: match e.distribution.unwrap_or_default() {
                Distribution::Uniform => DIST_UNIFORM,
                Distribution::Normal => DIST_NORMAL,
            },
            ..Default::default()
        };
        self.filter.apply(&mut rule);
        rule
    }

    /// Whether the rule reads the normal jitter table.
    pub fn needs_jitter_table(&self) -> bool {
        self.effects.jitter.is_some_and(|j| !j.is_zero())
            && self.effects.distribution == Some(Distribution::Normal)
    }
}

/// The rate limiter's buffer at `rate`: [`RATE_BACKLOG`], or two 64 KiB GSO
/// packets' worth if that is longer.
pub fn rate_backlog(rate: Rate) -> Duration {
    let two_gso = Duration::from_secs_f64(2.0 * 65536.0 * 8.0 / rate.bits_per_second as f64);
    RATE_BACKLOG.max(two_gso)
}

/// The normal jitter table: Φ⁻¹((i + 0.5) / N) for i in 0..N, in units of
/// 2^-JITTER_TABLE_SHIFT standard deviations (the eBPF side has no floats).
pub fn normal_table() -> Vec<i32> {
    let n = JITTER_TABLE_SIZE as usize;
    let scale = f64::from(1u32 << JITTER_TABLE_SHIFT);
    (0..n).map(|i| (inverse_normal_cdf((i as f64 + 0.5) / n as f64) * scale).round() as i32).collect()
}

/// Φ⁻¹(p), the standard normal quantile, by Acklam's rational
/// approximation (relative error below 1.2e-9), for 0 < p < 1.
fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416];
    const LOW: f64 = 0.024_25;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Address and mask as 32-bit words in network byte order, the layout the
/// eBPF side compares against (it loads header words without swapping).
pub(crate) fn peer(cidr: Cidr) -> NetPeer {
    let (family, bytes, bits): (u32, [u8; 16], u32) = match cidr.addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (FAMILY_V4, b, 32)
        }
        IpAddr::V6(a) => (FAMILY_V6, a.octets(), 128),
    };
    let prefix = u32::from(cidr.prefix).min(bits);
    let mut mask_bytes = [0u8; 16];
    for (i, m) in mask_bytes.iter_mut().enumerate().take((bits / 8) as usize) {
        let covered = prefix.saturating_sub(i as u32 * 8).min(8);
        *m = if covered == 0 { 0 } else { 0xffu8 << (8 - covered) };
    }
    let word =
        |b: &[u8; 16], i: usize| u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    let mut p = NetPeer { family, ..Default::default() };
    for i in 0..4 {
        p.mask[i] = word(&mask_bytes, i);
        p.addr[i] = word(&bytes, i) & p.mask[i];
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ne(b: [u8; 4]) -> u32 {
        u32::from_ne_bytes(b)
    }

    #[test]
    fn v4_prefix_masks_in_network_order() {
        let p = peer("10.1.2.3/16".parse().unwrap());
        assert_eq!(p.family, FAMILY_V4);
        assert_eq!(p.addr, [ne([10, 1, 0, 0]), 0, 0, 0]);
        assert_eq!(p.mask, [ne([255, 255, 0, 0]), 0, 0, 0]);
        let p = peer("10.1.2.3/0".parse().unwrap());
        assert_eq!((p.addr, p.mask), ([0; 4], [0; 4]));
        let p = peer("192.168.1.7/29".parse().unwrap());
        assert_eq!(p.mask[0], ne([255, 255, 255, 248]));
        assert_eq!(p.addr[0], ne([192, 168, 1, 0]));
    }

    #[test]
    fn v6_prefix_spans_words() {
        let p = peer("2001:db8:aa:bb::1/40".parse().unwrap());
        assert_eq!(p.family, FAMILY_V6);
        assert_eq!(p.mask, [ne([255; 4]), ne([255, 0, 0, 0]), 0, 0]);
        assert_eq!(p.addr, [ne([0x20, 0x01, 0x0d, 0xb8]), ne([0, 0, 0, 0]), 0, 0]);
    }

    fn effects_fault(kind: NetKind, effects: NetEffects) -> Result<NetFault, Vec<String>> {
        NetFault::new(kind, effects, NetFilter { direction: Direction::Egress, ..Default::default() })
    }

    fn pct(p: f64) -> Option<Percent> {
        Some(Percent::new(p).unwrap())
    }

    #[test]
    fn net_faults_are_validated_all_at_once() {
        let ms = |n| Some(Duration::from_millis(n));
        assert!(effects_fault(NetKind::Delay, NetEffects { delay: ms(50), ..Default::default() }).is_ok());
        let errs = NetFault::new(
            NetKind::Delay,
            NetEffects {
                jitter: ms(10),
                distribution: Some(Distribution::Normal),
                reorder: pct(5.0),
                ..Default::default()
            },
            NetFilter { direction: Direction::Both, ..Default::default() },
        )
        .unwrap_err();
        let all = errs.join("\n");
        for needle in ["needs --delay", "--jitter needs --delay", "--reorder needs --delay"] {
            assert!(all.contains(needle), "{needle:?} missing from {all}");
        }
        let errs = effects_fault(
            NetKind::Rate,
            NetEffects {
                rate: Some(Rate { bits_per_second: 1000 }),
                delay: Some(Duration::from_secs(11)),
                distribution: Some(Distribution::Uniform),
                ..Default::default()
            },
        )
        .unwrap_err()
        .join("\n");
        assert!(errs.contains("at least 100kbit") && errs.contains("at most 10s"), "{errs}");
        assert!(errs.contains("--distribution needs --jitter"), "{errs}");
    }

    #[test]
    fn effects_become_one_rule() {
        let f = effects_fault(
            NetKind::Delay,
            NetEffects {
                delay: Some(Duration::from_millis(50)),
                jitter: Some(Duration::from_millis(10)),
                distribution: Some(Distribution::Normal),
                loss: pct(100.0),
                rate: Some(Rate { bits_per_second: 10_000_000 }),
                duplicate: pct(50.0),
                ..Default::default()
            },
        )
        .unwrap();
        let r = f.rule(9, 2);
        assert_eq!((r.deadline_ns, r.slot, r.directions), (9, 2, DIR_EGRESS));
        assert_eq!((r.delay_ns, r.jitter_ns, r.rate_bps), (50_000_000, 10_000_000, 10_000_000));
        assert_eq!(r.flags, FLAG_SCHEDULE | FLAG_FLOW_PER_PACKET);
        assert_eq!((r.loss_threshold, r.duplicate_threshold, r.corrupt_threshold), (1 << 32, 1 << 31, 0));
        assert_eq!(r.distribution, DIST_NORMAL);
        assert_eq!(r.rate_backlog_ns, 1_000_000_000);
        assert!(f.needs_jitter_table() && f.schedules());
        // 50 + 3.7 * 10 ms + 1 s of rate backlog
        assert_eq!(f.max_departure_ahead(), Duration::from_millis(1087));
        // Duplication alone schedules nothing: no fq, no flow per packet.
        let d = effects_fault(NetKind::Duplicate, NetEffects { duplicate: pct(1.0), ..Default::default() })
            .unwrap();
        assert!(!d.schedules());
        assert_eq!(d.rule(1, 0).flags, 0);
        // A fixed delay keeps fq's flows: packets of a flow stay in order.
        let fixed = effects_fault(
            NetKind::Delay,
            NetEffects { delay: Some(Duration::from_millis(5)), ..Default::default() },
        )
        .unwrap();
        assert_eq!(fixed.rule(1, 0).flags, FLAG_SCHEDULE);
        // The largest departure chaos can schedule stays below the bound.
        let worst = effects_fault(
            NetKind::Delay,
            NetEffects {
                delay: Some(MAX_DELAY),
                jitter: Some(MAX_DELAY),
                distribution: Some(Distribution::Normal),
                rate: Some(Rate { bits_per_second: MIN_RATE_BPS }),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(worst.max_departure_ahead() < MAX_DEPARTURE_AHEAD, "{:?}", worst.max_departure_ahead());
    }

    #[test]
    fn normal_table_is_a_standard_normal() {
        let t = normal_table();
        assert_eq!(t.len(), JITTER_TABLE_SIZE as usize);
        let scale = f64::from(1u32 << JITTER_TABLE_SHIFT);
        let mean = t.iter().map(|&v| f64::from(v)).sum::<f64>() / t.len() as f64 / scale;
        let var = t.iter().map(|&v| (f64::from(v) / scale).powi(2)).sum::<f64>() / t.len() as f64;
        assert!(mean.abs() < 1e-4, "mean {mean}");
        assert!((var.sqrt() - 1.0).abs() < 0.005, "sd {}", var.sqrt());
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "quantiles ascend");
        assert_eq!(t[0], -t[t.len() - 1], "symmetric");
        let max = f64::from(t[t.len() - 1]) / scale;
        assert!((3.6..NORMAL_TABLE_MAX_SIGMAS).contains(&max), "largest quantile {max}");
        // 84.13% of the mass lies below +1 sd.
        let below = t.iter().filter(|&&v| f64::from(v) < scale).count() as f64 / t.len() as f64;
        assert!((below - 0.8413).abs() < 0.001, "{below}");
    }

    #[test]
    fn rule_carries_everything() {
        let loss = NetLoss {
            percent: Percent::new(100.0).unwrap(),
            burst: None,
            filter: NetFilter {
                direction: Direction::Egress,
                cidrs: vec!["fd00::/8".parse().unwrap()],
                port: Some(53),
                protocol: Protocol::Icmp,
            },
            interfaces: Vec::new(),
        };
        let r = loss.rule(77, 3);
        assert_eq!((r.deadline_ns, r.slot, r.port, r.directions), (77, 3, 53, DIR_EGRESS));
        assert_eq!(r.loss_threshold, chaos_abi::net::LOSS_ALWAYS);
        assert_eq!(r.protocol, 58, "ICMP on an IPv6-only rule is ICMPv6");
        assert_eq!((r.burst_enter_threshold, r.burst_leave_threshold), (0, 0), "independent loss");
    }

    #[test]
    fn several_networks_are_one_set_keyed_by_slot() {
        let filter = |cidrs: &[&str]| NetFilter {
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            ..NetFilter::default()
        };
        let mut rule = NetRule::default();
        filter(&["10.0.0.0/8"]).apply(&mut rule);
        assert_eq!(rule.peer.family, FAMILY_V4, "one network stays inline");
        assert!(filter(&["10.0.0.0/8"]).peer_keys(3).is_empty());
        let two = filter(&["10.1.2.0/24", "2001:db8::1"]);
        two.apply(&mut rule);
        assert_eq!(rule.peer.family, FAMILY_SET);
        let keys = two.peer_keys(3);
        assert_eq!(keys[0].0, PEER_KEY_FIXED_BITS + 24);
        assert_eq!(keys[1].0, PEER_KEY_FIXED_BITS + 128);
        assert_eq!((keys[0].1.slot_be, keys[0].1.family_be), (3u32.to_be(), FAMILY_V4.to_be()));
        assert_eq!(keys[0].1.addr, [u32::from_ne_bytes([10, 1, 2, 0]), 0, 0, 0]);
        assert_eq!(keys[1].1.family_be, FAMILY_V6.to_be());
        let e = filter(&["10.0.0.0/8", "10.0.0.0/8"]).check().unwrap_err();
        assert!(e.contains("same network"), "{e}");
        let e = filter(&["10.1.2.3/24", "10.1.2.4/24"]).check().unwrap_err();
        assert!(e.contains("10.1.2.4/24 is the same network as 10.1.2.3/24"), "{e}");
        assert!(filter(&["10.0.0.0/8", "10.1.0.0/16"]).check().is_ok(), "nested networks are two entries");
        let many: Vec<String> = (0..65).map(|i| format!("10.{i}.0.0/16")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(filter(&many).check().unwrap_err().contains("at most 64"));
        assert!(filter(&many[..64]).check().is_ok());
        let mut mixed = filter(&["10.0.0.0/8", "2001:db8::/32"]);
        mixed.protocol = Protocol::Icmp;
        assert!(mixed.check().unwrap_err().contains("ICMP and ICMPv6"));
        mixed.cidrs.pop();
        assert!(mixed.check().is_ok(), "one family with icmp");
    }

    fn burst(percent: f64, burst: f64) -> Result<NetLoss, String> {
        NetLoss::new(Percent::new(percent).unwrap(), Some(burst), NetFilter::default(), Vec::new())
    }

    #[test]
    fn burst_thresholds_keep_the_loss_rate() {
        let scale = LOSS_ALWAYS as f64;
        for (percent, b) in [(10.0, 4.0), (1.0, 1.5), (50.0, 2.0), (90.0, 100.0), (0.01, 3.0)] {
            let (enter, leave) = burst(percent, b).unwrap().burst_thresholds().unwrap();
            let (p, r) = (enter as f64 / scale, leave as f64 / scale);
            assert!((1.0 / r - b).abs() < 1e-6 * b, "{percent}% in {b}: mean burst {}", 1.0 / r);
            let rate = p / (p + r) * 100.0;
            assert!((rate - percent).abs() < 1e-6 * percent.max(1.0), "{percent}% in {b}: rate {rate}");
        }
        // The shortest mean burst is independent loss: p + r = 1.
        let (enter, leave) = burst(50.0, 2.0).unwrap().burst_thresholds().unwrap();
        assert_eq!(enter + leave, LOSS_ALWAYS);
    }

    #[test]
    fn impossible_bursts_are_refused_with_the_range() {
        let e = burst(60.0, 2.0).unwrap_err();
        assert!(e.contains("2.500 packets") && e.contains("--burst"), "{e}");
        for (percent, b) in [(0.0, 2.0), (100.0, 2.0), (10.0, f64::NAN), (10.0, 2e6), (10.0, 0.5)] {
            assert!(burst(percent, b).is_err(), "{percent}% in {b}");
        }
        assert!(burst(60.0, 2.5).is_ok(), "independent loss at the bound");
    }
}
