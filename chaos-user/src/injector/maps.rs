//! Typed access to the fault object's maps, shared by the families.

use aya::Ebpf;

use crate::error::{Error, Result};

pub(super) fn map<'a, T: TryFrom<&'a aya::maps::Map>>(ebpf: &'a Ebpf, name: &str) -> Result<T> {
    ebpf.map(name)
        .ok_or_else(|| Error::kernel("fault object", anyhow::anyhow!("map {name} missing")))?
        .try_into()
        .map_err(|_| Error::kernel("fault object", anyhow::anyhow!("map {name} has the wrong type")))
}

pub(super) fn map_mut<'a, T: TryFrom<&'a mut aya::maps::Map>>(ebpf: &'a mut Ebpf, name: &str) -> Result<T> {
    ebpf.map_mut(name)
        .ok_or_else(|| Error::kernel("fault object", anyhow::anyhow!("map {name} missing")))?
        .try_into()
        .map_err(|_| Error::kernel("fault object", anyhow::anyhow!("map {name} has the wrong type")))
}
