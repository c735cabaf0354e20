//! `net-reset`: the target's TCP connections are reset, as when the peer's
//! host reboots or a stateful box on the way (a NAT, a load balancer, a
//! firewall) forgets them.
//!
//! Both ends see it: the target's socket fails with ECONNABORTED and the
//! peer gets a reset (ECONNRESET on its next call). A sweep finds the
//! target's connections and resets each matching one with the attack's
//! probability; an attack sweeps once at its start, or every `--every`
//! until its deadline.

use std::{net::SocketAddr, time::Duration};

use serde::Serialize;

use crate::units::{Cidr, Percent, format_duration};
use chaos_abi::net::MAX_PEERS_PER_ATTACK;

/// The shortest `--every`: a sweep dumps every TCP socket of the target's
/// namespaces, which on a busy host takes milliseconds.
pub const MIN_EVERY: Duration = Duration::from_millis(10);

/// `net-reset`: which connections, how many, how often.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetReset {
    pub percent: Percent,
    /// The peer's networks; any peer when empty.
    #[serde(rename = "cidr", skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<Cidr>,
    /// A port at either end: the peer's (a service the target uses) or the
    /// target's own (a service it offers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The time between sweeps; one sweep, at the start, when absent.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "super::net::opt_duration")]
    pub every: Option<Duration>,
}

impl NetReset {
    pub fn new(
        percent: Percent,
        cidrs: Vec<Cidr>,
        port: Option<u16>,
        every: Option<Duration>,
    ) -> Result<Self, String> {
        if percent.value() == 0.0 {
            return Err("--percent 0 resets nothing; give a share from 0.0000001 to 100".into());
        }
        if cidrs.len() > MAX_PEERS_PER_ATTACK as usize {
            return Err(format!(
                "{} --cidr given; at most {MAX_PEERS_PER_ATTACK} networks per attack",
                cidrs.len()
            ));
        }
        if let Some(every) = every
            && every < MIN_EVERY
        {
            return Err(format!(
                "--every {} is too often: at least {} (each sweep reads every TCP socket of the target's \
                 network namespaces)",
                format_duration(every),
                format_duration(MIN_EVERY)
            ));
        }
        Ok(Self { percent, cidrs, port, every })
    }

    /// Whether the target's connection from `local` to `remote` is one to
    /// reset (before the draw).
    pub fn matches(&self, local: SocketAddr, remote: SocketAddr) -> bool {
        let peer = self.cidrs.is_empty() || self.cidrs.iter().any(|c| c.contains(remote.ip()));
        let port = self.port.is_none_or(|p| p == local.port() || p == remote.port());
        peer && port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reset(cidrs: &[&str], port: Option<u16>) -> NetReset {
        let cidrs = cidrs.iter().map(|c| c.parse().unwrap()).collect();
        NetReset::new(Percent::new(100.0).unwrap(), cidrs, port, None).unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn matches_peer_networks_and_either_port() {
        let r = reset(&["10.1.0.0/16", "192.0.2.7"], Some(6379));
        assert!(r.matches(addr("10.9.0.1:40000"), addr("10.1.2.3:6379")), "the peer's port");
        assert!(r.matches(addr("10.9.0.1:6379"), addr("192.0.2.7:50000")), "the target's own port");
        assert!(!r.matches(addr("10.9.0.1:40000"), addr("10.1.2.3:80")), "another port");
        assert!(
            !r.matches(addr("10.1.0.1:40000"), addr("10.2.0.1:6379")),
            "the local address is not the peer"
        );
        assert!(r.matches(addr("[::ffff:10.9.0.1]:1"), addr("[::ffff:10.1.0.1]:6379")), "dual-stack socket");
        assert!(reset(&[], None).matches(addr("[::1]:1"), addr("[::1]:2")));
    }

    #[test]
    fn experiment_steps_take_the_same_fields() {
        let step = "{fault: net-reset, cidr: [10.1.0.0/16, 10.2.0.9], port: 6379, every: 500ms, percent: 25, \
                    duration: 1m}";
        let Ok(crate::faults::Fault::NetReset(r)) = crate::faults::fault_of_step(step) else {
            panic!("{step} is not a net-reset")
        };
        assert_eq!(
            (r.port, r.every, r.percent.value()),
            (Some(6379), Some(Duration::from_millis(500)), 25.0)
        );
        assert_eq!(r.cidrs.len(), 2);
        let e = crate::faults::fault_of_step("{fault: net-reset, every: 1ms, duration: 1m}").unwrap_err();
        assert!(e.contains("`every` 1ms is too often"), "{e}");
    }

    #[test]
    fn bad_parameters_are_refused() {
        let p = |v| Percent::new(v).unwrap();
        let e = NetReset::new(p(0.0), vec![], None, None).unwrap_err();
        assert!(e.contains("--percent 0"), "{e}");
        let e = NetReset::new(p(50.0), vec![], None, Some(Duration::from_millis(5))).unwrap_err();
        assert!(e.contains("--every 5ms") && e.contains("at least 10ms"), "{e}");
        let many = (0..=MAX_PEERS_PER_ATTACK).map(|i| format!("10.{i}.0.0/16").parse().unwrap()).collect();
        let e = NetReset::new(p(50.0), many, None, None).unwrap_err();
        assert!(e.contains("at most 64"), "{e}");
    }
}
