//! `net-refuse`: the target's new outgoing connections fail at once with an
//! errno, as when the peer's host or a firewall on the way refuses them;
//! and/or new incoming connections to the target's listeners are answered
//! with a reset, as when the service is down.
//!
//! Outgoing, it acts on the calls, not on packets: `connect()` of TCP and
//! UDP sockets and `sendto()`/`sendmsg()` with a destination on unconnected
//! UDP sockets fail before anything is sent. Incoming, it acts on the
//! kernel's choice of a listener for a SYN. Connections established before
//! the attack, and data on connected sockets, are untouched.

use chaos_abi::conn::{CALL_CONNECT, CALL_INCOMING, CALL_SENDMSG, ConnRule, EPERM};
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

/// Which connections a `net-refuse` attack refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ConnDirection {
    /// Those the target opens: its connect() and UDP sends fail.
    #[default]
    #[value(alias = "egress")]
    Outgoing,
    /// Those made to the target's TCP listeners: the client gets a reset.
    #[value(alias = "ingress")]
    Incoming,
    /// Both.
    Both,
}

impl ConnDirection {
    pub fn outgoing(self) -> bool {
        self != Self::Incoming
    }

    pub fn incoming(self) -> bool {
        self != Self::Outgoing
    }
}

/// `net-refuse`: fail the target's matching calls with `errno`, and/or
/// refuse the matching connections made to it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetRefuse {
    pub direction: ConnDirection,
    /// What the target's refused calls fail with; a refused incoming
    /// connection is a reset, which its client sees as ECONNREFUSED.
    pub errno: Errno,
    pub percent: Percent,
    /// The peer's network (an outgoing connection's destination, an
    /// incoming one's client); every peer when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Cidr>,
    /// The destination port (the target's listening port for incoming
    /// connections); every port when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub protocol: Transport,
}

impl NetRefuse {
    /// `errno`: None for the default, ECONNREFUSED.
    pub fn new(
        direction: ConnDirection,
        errno: Option<Errno>,
        percent: Percent,
        cidr: Option<Cidr>,
        port: Option<u16>,
        protocol: Transport,
    ) -> Result<Self, String> {
        if percent.value() == 0.0 {
            return Err("--percent 0 refuses nothing; give a share from 0.0000001 to 100".into());
        }
        let refused = Errno { number: libc::ECONNREFUSED, name: "ECONNREFUSED" };
        if direction == ConnDirection::Incoming
            && let Some(e) = errno.filter(|e| e.number != refused.number)
        {
            return Err(format!(
                "--errno {} with --direction incoming: an incoming connection is refused with a reset, \
                 which its client sees as ECONNREFUSED; --errno is for the target's own (outgoing) calls",
                e.name
            ));
        }
        if direction.incoming() && protocol == Transport::Udp {
            return Err(format!(
                "--protocol udp with --direction {}: incoming refusals are for TCP connections; to \
                 drop what the target receives over UDP use net-loss --direction ingress --protocol udp",
                if direction == ConnDirection::Both { "both" } else { "incoming" }
            ));
        }
        Ok(Self { direction, errno: errno.unwrap_or(refused), percent, cidr, port, protocol })
    }

    /// It fails outgoing calls with another errno than EPERM, which the
    /// kernel gives a refusal by default: the programs need
    /// `bpf_set_retval`.
    pub fn sets_errno(&self) -> bool {
        self.direction.outgoing() && self.errno.number != EPERM as i32
    }

    /// It refuses UDP sends with a destination (sendmsg hooks), not only
    /// connects.
    pub fn refuses_sends(&self) -> bool {
        self.direction.outgoing() && self.protocol != Transport::Tcp
    }

    pub fn rule(&self, deadline_ns: u64, slot: u32) -> ConnRule {
        let mut calls = 0;
        if self.direction.outgoing() {
            calls |= CALL_CONNECT;
        }
        if self.refuses_sends() {
            calls |= CALL_SENDMSG;
        }
        if self.direction.incoming() {
            calls |= CALL_INCOMING;
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
        let errno = Some(errno.parse().unwrap());
        NetRefuse::new(
            ConnDirection::Outgoing,
            errno,
            Percent::new(percent).unwrap(),
            None,
            None,
            Transport::Any,
        )
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
            NetRefuse::new(ConnDirection::Both, None, Percent::new(0.0).unwrap(), None, None, Transport::Any)
                .unwrap_err();
        assert!(e.contains("--percent"), "{e}");
    }

    #[test]
    fn incoming_refuses_tcp_listeners_with_a_reset() {
        let all = Percent::new(100.0).unwrap();
        let f = NetRefuse::new(ConnDirection::Incoming, None, all, None, Some(80), Transport::Any).unwrap();
        assert_eq!(f.errno.number, libc::ECONNREFUSED);
        assert!(!f.sets_errno() && !f.refuses_sends());
        assert_eq!(f.rule(1, 0).calls, CALL_INCOMING);
        let both = NetRefuse::new(ConnDirection::Both, None, all, None, None, Transport::Any).unwrap();
        assert_eq!(both.rule(1, 0).calls, CALL_CONNECT | CALL_SENDMSG | CALL_INCOMING);
        assert!(both.sets_errno());
        let refused = Some("ECONNREFUSED".parse().unwrap());
        NetRefuse::new(ConnDirection::Incoming, refused, all, None, None, Transport::Tcp).unwrap();
        let eperm = Some("EPERM".parse().unwrap());
        let e = NetRefuse::new(ConnDirection::Incoming, eperm, all, None, None, Transport::Any).unwrap_err();
        assert!(e.contains("--errno EPERM") && e.contains("reset"), "{e}");
        let e = NetRefuse::new(ConnDirection::Incoming, None, all, None, None, Transport::Udp).unwrap_err();
        assert!(e.contains("--protocol udp") && e.contains("net-loss"), "{e}");
        let e = NetRefuse::new(ConnDirection::Both, None, all, None, None, Transport::Udp).unwrap_err();
        assert!(e.contains("--direction both"), "{e}");
    }
}
