//! Typed access to the fault object's maps, shared by the families.

use aya::{
    Ebpf, Pod,
    maps::{HashMap, MapData},
};

use crate::{
    attack::Attack,
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

/// Write `rule` under the attack's target cgroup id in the family's rule
/// map `rules`. One rule per target and family: a second one is refused
/// with "<target> already has <taken>".
pub(super) fn insert_rule<R: Pod>(
    ebpf: &mut Ebpf,
    rules: &str,
    attack: &Attack,
    rule: &R,
    taken: &str,
) -> Result<()> {
    let id = attack.target.id;
    let mut map: HashMap<&mut MapData, u64, R> = map_mut(ebpf, rules)?;
    if map.get(&id, 0).is_ok() {
        return Err(Error::invalid(format!("{} already has {taken}", attack.target)));
    }
    map.insert(&id, rule, 0).map_err(|e| Error::kernel(format!("writing the rule for {}", attack.target), e))
}

/// Delete the rule of `id` from the family's rule map `rules`; whether
/// there was one (the fault is inert from the moment it is gone).
pub(super) fn remove_rule<R: Pod>(ebpf: &mut Ebpf, rules: &str, id: u64) -> Result<bool> {
    let mut map: HashMap<&mut MapData, u64, R> = map_mut(ebpf, rules)?;
    Ok(map.remove(&id).is_ok())
}
