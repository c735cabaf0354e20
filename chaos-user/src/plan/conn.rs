//! Connection faults (`net-refuse`): cgroup sock_addr programs on the
//! target cgroup — connect4 and connect6 always, sendmsg4 and sendmsg6 when
//! UDP sends are refused too. Their links are fds: they vanish with the
//! process. An errno other than EPERM needs `bpf_set_retval` in these
//! programs (Linux 6.1); the programs built without it give EPERM.

use serde::Serialize;

use super::{FamilyMechanism, Held, first_available};
use crate::{
    capabilities::{Capability, Findings},
    error::{Error, Result},
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
    pub errno: ConnErrno,
    /// sendmsg4/sendmsg6 (UDP sends with a destination), beside connect.
    pub sendmsg: bool,
}

/// `sets_errno`: the fault's errno is not EPERM. `sendmsg`: it refuses UDP
/// sends too.
pub fn plan(subject: &str, sets_errno: bool, sendmsg: bool, caps: &dyn Findings) -> Result<ConnMechanism> {
    first_available(subject, "net-refuse", &[((), Capability::CgroupSockAddr)], None, caps)?;
    if !sets_errno {
        return Ok(ConnMechanism { errno: ConnErrno::Eperm, sendmsg });
    }
    if caps.is_unknown(Capability::SockAddrRetval) || caps.has(Capability::SockAddrRetval) {
        first_available(
            subject,
            "an errno other than EPERM",
            &[((), Capability::SockAddrRetval)],
            None,
            caps,
        )?;
        return Ok(ConnMechanism { errno: ConnErrno::SetRetval, sendmsg });
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
        let mut hooks = vec!["connect4", "connect6"];
        if self.sendmsg {
            hooks.extend(["sendmsg4", "sendmsg6"]);
        }
        let errno = match self.errno {
            ConnErrno::SetRetval => "errno by bpf_set_retval",
            ConnErrno::Eperm => "EPERM",
        };
        format!("cgroup {} on the target ({errno})", hooks.join(", "))
    }

    fn held(&self) -> Held {
        Held { links: vec!["cgroup sock_addr links"], recorded: Vec::new() }
    }
}
