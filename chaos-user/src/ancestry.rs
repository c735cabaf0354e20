//! How the fault object's tracing and LSM programs find the current task's
//! ancestor cgroups (chaos-ebpf/src/cgroup.rs): the kernel's helper where
//! tracing programs may call it (Linux 5.14), else reads through the task's
//! cgroup at offsets from the kernel's BTF. The planner chooses
//! ([`crate::plan::Ancestry`]); the choice is written into the object's
//! read-only data when it is loaded, so the verifier never sees the other
//! way.

use chaos_abi::cgroup::{ANCESTRY_HELPER, ANCESTRY_TASK_IDS, Ancestry};

use crate::{
    btf::{Btf, BtfError},
    error::{Error, Result},
    plan,
};

/// The name of the global in the fault object.
pub const GLOBAL: &str = "ANCESTRY";

/// The offsets the reads need, from this kernel's BTF. A kernel without
/// `cgroup.ancestor_ids` (Linux 6.0 replaced it with pointers) has the
/// helper.
pub fn offsets(btf: &Btf) -> std::result::Result<Ancestry, BtfError> {
    Ok(Ancestry {
        mode: ANCESTRY_TASK_IDS,
        task_cgroups: btf.offset_of("task_struct", "cgroups")?,
        css_set_dfl_cgrp: btf.offset_of("css_set", "dfl_cgrp")?,
        cgroup_level: btf.offset_of("cgroup", "level")?,
        cgroup_ancestor_ids: btf.offset_of("cgroup", "ancestor_ids")?,
        _pad: 0,
    })
}

/// The global's value for `via`.
pub fn global(via: plan::Ancestry) -> Result<Ancestry> {
    match via {
        plan::Ancestry::Helper => Ok(Ancestry { mode: ANCESTRY_HELPER, ..Ancestry::default() }),
        plan::Ancestry::TaskRead => {
            let btf = crate::btf::kernel().map_err(|e| {
                Error::environment(format!("matching cgroups by task reads needs the kernel's BTF: {e}"))
            })?;
            offsets(btf).map_err(|e| {
                Error::environment(format!(
                    "matching cgroups by task reads: this kernel's cgroup structures: {e}"
                ))
            })
        }
    }
}
