//! Network faults and their filters.

use std::net::IpAddr;

use chaos_abi::net::{DIR_EGRESS, DIR_INGRESS, FAMILY_ANY, FAMILY_V4, FAMILY_V6, NetPeer, NetRule};
use serde::Serialize;

use crate::units::{Cidr, Percent};

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetFilter {
    pub direction: Direction,
    /// The peer: destination of sent packets, source of received ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Cidr>,
    /// Source or destination port, either side of the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub protocol: Protocol,
}

/// `net-loss`: drop packets with a probability, silently, as a lossy link.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetLoss {
    pub percent: Percent,
    #[serde(flatten)]
    pub filter: NetFilter,
}

impl NetFilter {
    /// Write the filter fields of a rule.
    pub fn apply(&self, rule: &mut NetRule) {
        rule.directions = self.direction.bits();
        rule.port = self.port.unwrap_or(0);
        let v6 = self.cidr.is_some_and(|c| c.addr.is_ipv6());
        rule.protocol = self.protocol.number(v6);
        rule.peer = self.cidr.map_or(NetPeer { family: FAMILY_ANY, ..Default::default() }, peer);
    }
}

impl NetLoss {
    pub fn rule(&self, deadline_ns: u64, slot: u32) -> NetRule {
        let mut rule =
            NetRule { deadline_ns, loss_threshold: self.percent.threshold(), slot, ..Default::default() };
        self.filter.apply(&mut rule);
        rule
    }
}

/// Address and mask as 32-bit words in network byte order, the layout the
/// eBPF side compares against (it loads header words without swapping).
fn peer(cidr: Cidr) -> NetPeer {
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

    #[test]
    fn rule_carries_everything() {
        let loss = NetLoss {
            percent: Percent::new(100.0).unwrap(),
            filter: NetFilter {
                direction: Direction::Egress,
                cidr: Some("fd00::/8".parse().unwrap()),
                port: Some(53),
                protocol: Protocol::Icmp,
            },
        };
        let r = loss.rule(77, 3);
        assert_eq!((r.deadline_ns, r.slot, r.port, r.directions), (77, 3, 53, DIR_EGRESS));
        assert_eq!(r.loss_threshold, chaos_abi::net::LOSS_ALWAYS);
        assert_eq!(r.protocol, 58, "ICMP on an IPv6-only rule is ICMPv6");
    }
}
