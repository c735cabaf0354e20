//! Connection resets (`net-reset`): no program and no attachment. chaos's
//! own thread asks the kernel to destroy the target's sockets through
//! inet_diag's `SOCK_DESTROY` (what `ss -K` does), inside each network
//! namespace the target's processes live in. Nothing stays in the kernel:
//! the fault is each sweep's resets, and it ends when the sweeps do.

use serde::Serialize;

use super::{FamilyMechanism, Held, first_available};
use crate::{
    capabilities::{Capability, Findings},
    error::Result,
};

/// How a socket is reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResetVia {
    /// inet_diag `SOCK_DESTROY` (`CONFIG_INET_DIAG_DESTROY`, Linux 4.5):
    /// `tcp_abort()` (net/ipv4/tcp.c) sends the peer a reset and fails the
    /// local socket with ECONNABORTED.
    InetDiag,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ResetMechanism {
    pub via: ResetVia,
}

pub fn plan(subject: &str, caps: &dyn Findings) -> Result<ResetMechanism> {
    first_available(subject, "net-reset", &[((), Capability::SockDestroy)], None, caps)?;
    Ok(ResetMechanism { via: ResetVia::InetDiag })
}

impl FamilyMechanism for ResetMechanism {
    fn describe(&self) -> String {
        "inet_diag SOCK_DESTROY in the target's network namespaces, from chaos's own thread".into()
    }

    fn held(&self) -> Held {
        Held::default()
    }

    /// No rule in the kernel: the resets are chaos's own acts (see
    /// [`FamilyMechanism::in_process`]).
    fn kernel_deadline(&self) -> bool {
        false
    }

    fn in_process(&self) -> Option<&'static str> {
        Some("every sweep checks the deadline; none once chaos stops, hangs or dies")
    }
}
