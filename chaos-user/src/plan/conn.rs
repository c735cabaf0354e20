//! Connection faults (`net-refuse`). Outgoing: cgroup sock_addr programs
//! on the target cgroup — connect4 and connect6, and sendmsg4 and sendmsg6
//! when UDP sends are refused too. An errno other than EPERM needs
//! `bpf_set_retval` in these programs (Linux 6.1); the programs built
//! without it give EPERM. Incoming: an sk_lookup program on each network
//! namespace of the target (Linux 5.9). Every link is an fd: it vanishes
//! with the process.

use serde::Serialize;

use super::{FamilyMechanism, Held, first_available};
use crate::{
    capabilities::{Capability, Findings},
    error::{Error, Result},
    faults::NetRefuse,
};

/// How a refused call gets its errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnErrno {
    /// `bpf_set_retval`: the rule's errno.
    SetRetval,
    /// The kernel's default for a refusal: EPERM.
    Eperm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ConnMechanism {
    /// The cgroup programs for the target's own calls (connect4/connect6).
    pub outgoing: bool,
    /// How they give the errno (EPERM when there are none).
    pub errno: ConnErrno,
    /// sendmsg4/sendmsg6 (UDP sends with a destination), beside connect.
    pub sendmsg: bool,
    /// The sk_lookup program for connections to the target's listeners.
    pub incoming: bool,
}

/// What of a `net-refuse` the planner looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnDemand {
    /// The target's own calls are refused.
    pub outgoing: bool,
    /// ... with an errno other than EPERM.
    pub sets_errno: bool,
    /// ... UDP sends too (sendmsg hooks).
    pub sendmsg: bool,
    /// Connections to the target's listeners are refused.
    pub incoming: bool,
}

impl ConnDemand {
    /// Every part: what `chaos doctor` plans.
    pub const ALL: Self = Self { outgoing: true, sets_errno: true, sendmsg: true, incoming: true };

    pub fn of(f: &NetRefuse) -> Self {
        Self {
            outgoing: f.direction.outgoing(),
            sets_errno: f.sets_errno(),
            sendmsg: f.refuses_sends(),
            incoming: f.direction.incoming(),
        }
    }
}

pub fn plan(subject: &str, demand: ConnDemand, caps: &dyn Findings) -> Result<ConnMechanism> {
    let ConnDemand { outgoing, sets_errno, sendmsg, incoming } = demand;
    if incoming {
        first_available(subject, "refusing incoming connections", &[((), Capability::SkLookup)], None, caps)?;
    }
    let eperm = ConnMechanism { outgoing, errno: ConnErrno::Eperm, sendmsg: sendmsg && outgoing, incoming };
    if !outgoing {
        return Ok(eperm);
    }
    first_available(subject, "net-refuse", &[((), Capability::CgroupSockAddr)], None, caps)?;
    if !sets_errno {
        return Ok(eperm);
    }
    if caps.is_unknown(Capability::SockAddrRetval) || caps.has(Capability::SockAddrRetval) {
        first_available(
            subject,
            "an errno other than EPERM",
            &[((), Capability::SockAddrRetval)],
            None,
            caps,
        )?;
        return Ok(ConnMechanism { errno: ConnErrno::SetRetval, ..eperm });
    }
    Err(Error::environment(format!(
        "{subject}: this kernel can refuse connections with EPERM only ({}: {}); give --errno EPERM, or run \
         on Linux 6.1 or later",
        Capability::SockAddrRetval,
        caps.detail(Capability::SockAddrRetval)
    )))
}

impl FamilyMechanism for ConnMechanism {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.outgoing {
            let mut hooks = vec!["connect4", "connect6"];
            if self.sendmsg {
                hooks.extend(["sendmsg4", "sendmsg6"]);
            }
            let errno = match self.errno {
                ConnErrno::SetRetval => "errno by bpf_set_retval",
                ConnErrno::Eperm => "EPERM",
            };
            parts.push(format!("cgroup {} on the target ({errno})", hooks.join(", ")));
        }
        if self.incoming {
            parts.push("sk_lookup in the target's network namespaces (a reset to the client)".into());
        }
        parts.join("; ")
    }

    fn held(&self) -> Held {
        let mut links = Vec::new();
        if self.outgoing {
            links.push("cgroup sock_addr links");
        }
        if self.incoming {
            links.push("netns sk_lookup links");
        }
        Held { links, recorded: Vec::new() }
    }
}
