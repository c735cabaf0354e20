//! Planning: which mechanism realizes each fault on this kernel, decided
//! from probed capabilities (the same probes `chaos doctor` prints), never
//! from version numbers or configs.

pub mod clock;
mod io;
mod net;

use serde::Serialize;

pub use self::{
    clock::ClockMechanism,
    io::{IoMechanism, IoVia},
    net::NetMechanism,
};
use crate::{
    attack::Attack,
    capabilities::{Capabilities, Capability},
    error::{Error, Result},
    faults::Fault,
};

/// How an attack is realized here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "family", rename_all = "kebab-case")]
pub enum Mechanism {
    Net(NetMechanism),
    Io(IoMechanism),
    Clock(ClockMechanism),
}

/// Choose the mechanism for `attack`. Errors say what is missing and why,
/// from the probes.
pub fn plan(attack: &Attack, caps: &mut Capabilities) -> Result<Mechanism> {
    match &attack.fault {
        Fault::NetLoss(loss) => net::plan(attack, &loss.filter, false, caps).map(Mechanism::Net),
        Fault::NetDelay(f)
        | Fault::NetRate(f)
        | Fault::NetDuplicate(f)
        | Fault::NetCorrupt(f)
        | Fault::NetReorder(f) => net::plan(attack, &f.filter, f.schedules(), caps).map(Mechanism::Net),
        Fault::IoError(fault) => io::plan(attack, fault, caps).map(Mechanism::Io),
        Fault::ClockSkew(_) => clock::plan(attack, caps).map(Mechanism::Clock),
    }
}

/// The error for a fault no mechanism can realize here.
fn unavailable(attack: &Attack, part: &str, tried: &[Capability], caps: &mut Capabilities) -> Error {
    let reasons: Vec<String> = tried.iter().map(|c| format!("{c}: {}", caps.probe(*c).detail)).collect();
    Error::environment(format!(
        "{} on {} is unavailable on this kernel ({part}): {}. `chaos doctor` shows every mechanism",
        attack.fault.kind(),
        attack.target,
        reasons.join("; ")
    ))
}
