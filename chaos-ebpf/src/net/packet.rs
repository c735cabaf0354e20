//! Just enough IPv4/IPv6 + TCP/UDP parsing to apply a rule's filters.
//!
//! Offsets are relative to the network header (`BPF_HDR_START_NET`), so the
//! same code works at tc (where data starts at the link-layer header, if the
//! device has one) and in cgroup_skb (where it starts at the network header).

use aya_ebpf::{
    bindings::{__sk_buff, bpf_hdr_start_off::BPF_HDR_START_NET},
    helpers::generated::bpf_skb_load_bytes_relative,
    maps::lpm_trie::Key,
};
use chaos_abi::net::{
    DIR_EGRESS, FAMILY_ANY, FAMILY_SET, FAMILY_V4, FAMILY_V6, NetRule, PEER_KEY_FIXED_BITS, PeerKey,
};

use crate::maps::NET_PEERS;

pub(super) const IPPROTO_TCP: u8 = 6;
pub(super) const IPPROTO_UDP: u8 = 17;
pub(super) const IPPROTO_SCTP: u8 = 132;
pub(super) const IPV4_MF_OFFSET_MASK: u16 = 0x3fff;

pub struct Headers {
    family: u32,
    protocol: u8,
    src: [u32; 4],
    dst: [u32; 4],
    /// (source, destination) in host byte order; (0, 0) when the packet has
    /// no ports we can read.
    ports: (u16, u16),
}

#[inline(always)]
pub(super) fn load<const N: usize>(skb: *mut __sk_buff, offset: u32) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    // SAFETY: the helper bounds-checks against the skb and writes at most
    // N bytes into `buf`.
    let ret = unsafe {
        bpf_skb_load_bytes_relative(
            skb as *const _,
            offset,
            buf.as_mut_ptr().cast(),
            N as u32,
            BPF_HDR_START_NET,
        )
    };
    (ret == 0).then_some(buf)
}

#[inline(always)]
fn word(b: &[u8], at: usize) -> u32 {
    // Keep network byte order: the loader stores addresses the same way.
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Headers {
    #[inline(always)]
    pub fn parse(skb: *mut __sk_buff) -> Option<Self> {
        let first: [u8; 1] = load(skb, 0)?;
        match first[0] >> 4 {
            4 => Self::parse_v4(skb),
            6 => Self::parse_v6(skb),
            _ => None,
        }
    }

    #[inline(always)]
    fn parse_v4(skb: *mut __sk_buff) -> Option<Self> {
        let h: [u8; 20] = load(skb, 0)?;
        let ihl = u32::from(h[0] & 0x0f) * 4;
        let frag = u16::from_be_bytes([h[6], h[7]]) & IPV4_MF_OFFSET_MASK;
        let protocol = h[9];
        // Only the first fragment carries the ports.
        let ports = if frag & 0x1fff == 0 && ihl >= 20 { ports(skb, protocol, ihl) } else { (0, 0) };
        Some(Self {
            family: FAMILY_V4,
            protocol,
            src: [word(&h, 12), 0, 0, 0],
            dst: [word(&h, 16), 0, 0, 0],
            ports,
        })
    }

    #[inline(always)]
    fn parse_v6(skb: *mut __sk_buff) -> Option<Self> {
        let h: [u8; 40] = load(skb, 0)?;
        // Extension headers are not walked: such packets match on
        // addresses only (documented in `chaos attack net-loss --help`).
        let protocol = h[6];
        Some(Self {
            family: FAMILY_V6,
            protocol,
            src: [word(&h, 8), word(&h, 12), word(&h, 16), word(&h, 20)],
            dst: [word(&h, 24), word(&h, 28), word(&h, 32), word(&h, 36)],
            ports: ports(skb, protocol, 40),
        })
    }

    #[inline(always)]
    pub fn matches(&self, rule: &NetRule, dir: u8) -> bool {
        if rule.protocol != 0 && rule.protocol != self.protocol {
            return false;
        }
        if rule.port != 0 && rule.port != self.ports.0 && rule.port != self.ports.1 {
            return false;
        }
        if rule.peer.family == FAMILY_ANY {
            return true;
        }
        let peer = if dir == DIR_EGRESS { &self.dst } else { &self.src };
        if rule.peer.family == FAMILY_SET {
            let data = PeerKey { slot_be: rule.slot.to_be(), family_be: self.family.to_be(), addr: *peer };
            return NET_PEERS.get(&Key::new(PEER_KEY_FIXED_BITS + 128, data)).is_some();
        }
        if rule.peer.family != self.family {
            return false;
        }
        let (want, mask) = (&rule.peer.addr, &rule.peer.mask);
        (peer[0] & mask[0]) == want[0]
            && (peer[1] & mask[1]) == want[1]
            && (peer[2] & mask[2]) == want[2]
            && (peer[3] & mask[3]) == want[3]
    }
}

#[inline(always)]
fn ports(skb: *mut __sk_buff, protocol: u8, l4: u32) -> (u16, u16) {
    if !matches!(protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        return (0, 0);
    }
    match load::<4>(skb, l4) {
        Some(p) => (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])),
        None => (0, 0),
    }
}
