//! `io-throttle`: cgroup v2's io controller. No program: the target's
//! `io.max` (block/blk-throttle.c, `tg_set_limit`), which needs the io
//! controller on the cgroup v2 hierarchy and a kernel built with
//! CONFIG_BLK_DEV_THROTTLING; where the controller is bound to a v1
//! hierarchy (a hybrid layout), the attack is refused.

use serde::Serialize;

use super::{FamilyMechanism, Held, first_available};
use crate::{
    capabilities::{Capability, Findings},
    error::Result,
};

/// How a target's disk I/O is held back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockVia {
    /// `io.max` of the target cgroup, one line per disk.
    IoMax,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BlockMechanism {
    pub via: BlockVia,
}

pub fn plan(subject: &str, caps: &dyn Findings) -> Result<BlockMechanism> {
    let via = first_available(
        subject,
        "limiting the target's disk I/O",
        &[(BlockVia::IoMax, Capability::CgroupIo)],
        None,
        caps,
    )?;
    Ok(BlockMechanism { via })
}

impl FamilyMechanism for BlockMechanism {
    fn describe(&self) -> String {
        "cgroup v2 io.max, restored by chaos or by its guardian".into()
    }

    fn held(&self) -> Held {
        Held { links: Vec::new(), recorded: vec!["io.max (each disk's line before the attack)"] }
    }

    /// A limit stays: the kernel holds no deadline.
    fn kernel_deadline(&self) -> bool {
        false
    }

    fn guardian(&self) -> Option<&'static str> {
        Some("restores the limits at the deadline if chaos hangs, at once if chaos dies or on SIGTERM")
    }
}
