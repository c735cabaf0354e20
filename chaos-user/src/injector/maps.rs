//! Typed access to the fault object's maps, shared by the families.

use aya::Ebpf;

use crate::{
    btf::{Btf, BtfError},
    error::{Error, Result},
};

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

/// Publish the cgroup levels of a family's rules in its `Array<Levels>` map
/// (`chaos_abi::cgroup::Levels`): what the programs read before any lookup.
pub(super) fn write_levels(ebpf: &mut Ebpf, map_name: &str, value: chaos_abi::cgroup::Levels) -> Result<()> {
    let mut levels: aya::maps::Array<&mut aya::maps::MapData, chaos_abi::cgroup::Levels> =
        map_mut(ebpf, map_name)?;
    levels.set(0, &value, 0).map_err(|e| Error::kernel("writing the cgroup level mask", e))
}

/// Struct offsets a family's programs need, read from this kernel's BTF the
/// first time (`cache` keeps them). Errors read "`family` needs the
/// kernel's BTF to `purpose`" and "`family` cannot read this kernel's
/// `structs`".
pub(super) fn btf_offsets<T: Copy + std::fmt::Debug>(
    cache: &mut Option<T>,
    [family, purpose, structs]: [&str; 3],
    read: impl FnOnce(&Btf) -> std::result::Result<T, BtfError>,
) -> Result<T> {
    if let Some(o) = *cache {
        return Ok(o);
    }
    let btf = crate::btf::kernel()
        .map_err(|e| Error::environment(format!("{family} needs the kernel's BTF to {purpose}: {e}")))?;
    let o = read(btf)
        .map_err(|e| Error::environment(format!("{family} cannot read this kernel's {structs}: {e}")))?;
    tracing::debug!(?o, "{structs} offsets");
    *cache = Some(o);
    Ok(o)
}
