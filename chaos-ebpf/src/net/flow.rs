//! A packet's flow as the target sees it: local and remote address and
//! port, from the packet's headers (`BPF_HDR_START_NET` offsets, so the
//! same code serves the cgroup_skb hooks, where data starts at the network
//! header, and tc, where it starts at the link-layer header).
//!
//! TCP, UDP and SCTP by their ports (the first fragment only); ICMP and
//! ICMPv6 echo by the identifier, which a ping socket's kernel side sets to
//! the socket's port and a raw pinger to its own (the request teaches the
//! flow, the reply matches it). IPv6 extension headers are not walked, as
//! nowhere else in the network family.

use aya_ebpf::bindings::__sk_buff;
use chaos_abi::net::{DIR_EGRESS, FAMILY_V4, FAMILY_V6, RxFlowKey};

use super::packet::{IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPV4_MF_OFFSET_MASK, load};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// ICMP echo request and reply types (RFC 792, RFC 4443).
const ICMP_ECHO: u8 = 8;
const ICMP_ECHOREPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// The flow of a packet the target sends (`DIR_EGRESS`) or receives
/// (`DIR_INGRESS`), keyed from the target's side; `None` for what no flow
/// names (other protocols, ICMP other than echo, later fragments).
#[inline(always)]
pub fn of(skb: *mut __sk_buff, dir: u8) -> Option<RxFlowKey> {
    let first: [u8; 1] = load(skb, 0)?;
    let (family, protocol, src, dst, l4) = match first[0] >> 4 {
        4 => {
            let h: [u8; 20] = load(skb, 0)?;
            let ihl = u32::from(h[0] & 0x0f) * 4;
            if ihl < 20 || u16::from_be_bytes([h[6], h[7]]) & IPV4_MF_OFFSET_MASK & 0x1fff != 0 {
                return None;
            }
            (FAMILY_V4 as u8, h[9], [word(&h, 12), 0, 0, 0], [word(&h, 16), 0, 0, 0], ihl)
        }
        6 => {
            let h: [u8; 40] = load(skb, 0)?;
            let src = [word(&h, 8), word(&h, 12), word(&h, 16), word(&h, 20)];
            let dst = [word(&h, 24), word(&h, 28), word(&h, 32), word(&h, 36)];
            (FAMILY_V6 as u8, h[6], src, dst, 40)
        }
        _ => return None,
    };
    let sent = dir == DIR_EGRESS;
    let (local_port, remote_port) = match protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            let p: [u8; 4] = load(skb, l4)?;
            let (src, dst) = (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]]));
            if sent { (src, dst) } else { (dst, src) }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let h: [u8; 6] = load(skb, l4)?;
            let want = match (protocol, sent) {
                (IPPROTO_ICMP, true) => ICMP_ECHO,
                (IPPROTO_ICMP, false) => ICMP_ECHOREPLY,
                (_, true) => ICMPV6_ECHO_REQUEST,
                (_, false) => ICMPV6_ECHO_REPLY,
            };
            if h[0] != want {
                return None;
            }
            (u16::from_be_bytes([h[4], h[5]]), 0)
        }
        _ => return None,
    };
    let (local, remote) = if sent { (src, dst) } else { (dst, src) };
    Some(RxFlowKey { family, protocol, local_port, remote_port, _pad: 0, local, remote })
}

/// Whether the kernel hands a packet of this protocol to one socket, chosen
/// by its ports (TCP, UDP, SCTP: unicast), rather than to every socket that
/// wants it — an ICMP packet goes to every raw socket of the namespace
/// (`raw_v4_input`, net/ipv4/raw.c), the target's included, whoever the
/// echo reply is for.
#[inline(always)]
pub fn demuxed_by_port(protocol: u8) -> bool {
    matches!(protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
}

#[inline(always)]
fn word(b: &[u8], at: usize) -> u32 {
    // Network byte order, as the loader reads keys back.
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
