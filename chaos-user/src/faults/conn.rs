//! `net-refuse`: the target's new outgoing connections fail at once with an
//! errno, as when the peer's host or a firewall on the way refuses them.
//!
//! It acts on the calls, not on packets: `connect()` of TCP and UDP sockets
//! and `sendto()`/`sendmsg()` with a destination on unconnected UDP
//! sockets fail before anything is sent. Connections established before the
//! attack, and data on connected sockets, are untouched.

use chaos_abi::conn::{CALL_CONNECT, CALL_SENDMSG, ConnRule, EPERM};
use serde::Serialize;

use super::{Errno, net::peer};
use crate::units::{Cidr, Percent};

/// Which sockets' calls a `net-refuse` attack fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// TCP and UDP.
    #[default]
    Any,
    /// TCP `connect()` only.
    Tcp,
    /// UDP `connect()`, `sendto()` and `sendmsg()` only.
    Udp,
}

impl Transport {
    /// IP protocol number; 0 = both.
    fn number(self) -> u8 {
        match self {
            Self::Any => 0,
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }
}

/// `net-refuse`: fail the target's matching calls with `errno`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetRefuse {
    pub errno: Errno,
    pub percent: Percent,
    /// The destination network; every destination when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Cidr>,
    /// The destination port; every port when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub protocol: Transport,
}

impl NetRefuse {
    pub fn new(
        errno: Errno,
        percent: Percent,
        cidr: Option<Cidr>,
        port: Option<u16>,
        protocol: Transport,
    ) -> Result<Self, String> {
        if percent.value() == 0.0 {
            return Err("--percent 0 refuses nothing; give a share from 0.0000001 to 100".into());
        }
        Ok(Self { errno, percent, cidr, port, protocol })
    }

    /// It fails with another errno than EPERM, which the kernel gives a
    /// refusal by default: the programs need `bpf_set_retval`.
    pub fn sets_errno(&self) -> bool {
        self.errno.number != EPERM as i32
    }

    /// It refuses UDP sends with a destination (sendmsg hooks), not only
    /// connects.
    pub fn refuses_sends(&self) -> bool {
        self.protocol != Transport::Tcp
    }

    pub fn rule(&self, deadline_ns: u64, slot: u32) -> ConnRule {
        let mut calls = CALL_CONNECT;
        if self.refuses_sends() {
            calls |= CALL_SENDMSG;
        }
        ConnRule {
            deadline_ns,
            threshold: self.percent.threshold(),
            peer: self.cidr.map(peer).unwrap_or_default(),
            port: self.port.unwrap_or(0),
            protocol: self.protocol.number(),
            errno: self.errno.number as u32,
            slot,
            calls,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use chaos_abi::{conn::ALWAYS, net::FAMILY_ANY};

    use super::*;

    fn refuse(errno: &str, percent: f64) -> NetRefuse {
        NetRefuse::new(errno.parse().unwrap(), Percent::new(percent).unwrap(), None, None, Transport::Any)
            .unwrap()
    }

    #[test]
    fn the_rule_carries_errno_rate_and_calls() {
        let r = refuse("ECONNREFUSED", 100.0).rule(7, 3);
        assert_eq!((r.deadline_ns, r.slot, r.threshold), (7, 3, ALWAYS));
        assert_eq!(r.errno, libc::ECONNREFUSED as u32);
        assert_eq!(r.calls, CALL_CONNECT | CALL_SENDMSG);
        assert_eq!((r.peer.family, r.port, r.protocol), (FAMILY_ANY, 0, 0));
        assert!(refuse("ECONNREFUSED", 1.0).sets_errno());
        assert!(!refuse("EPERM", 1.0).sets_errno());
    }

    #[test]
    fn tcp_refuses_connects_only() {
        let mut f = refuse("ENETUNREACH", 50.0);
        f.protocol = Transport::Tcp;
        f.port = Some(6379);
        f.cidr = Some("10.1.0.0/16".parse().unwrap());
        let r = f.rule(1, 0);
        assert_eq!((r.calls, r.protocol, r.port), (CALL_CONNECT, 6, 6379));
        assert_eq!(r.peer.addr[0], u32::from_ne_bytes([10, 1, 0, 0]));
        assert_eq!(r.peer.mask[0], u32::from_ne_bytes([255, 255, 0, 0]));
        assert!(!f.refuses_sends());
    }

    #[test]
    fn zero_percent_is_refused() {
        let e =
            NetRefuse::new("EPERM".parse().unwrap(), Percent::new(0.0).unwrap(), None, None, Transport::Any)
                .unwrap_err();
        assert!(e.contains("--percent"), "{e}");
    }
}
