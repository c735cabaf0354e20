//! The injector: one loaded fault object, the rules in its maps, and the
//! links that make the kernel run it.
//!
//! Starting an attack writes its rule (with the kernel-side deadline) and
//! then attaches what is not attached yet; stopping deletes the rule first,
//! which makes the fault inert at once, then detaches what no other attack
//! uses. Each fault family has its own part (`net`, ...) with its own maps
//! and programs; this module allocates counter slots and deadlines and
//! dispatches.

mod clock;
mod io;
mod maps;
mod net;

use std::time::{Duration, Instant};

use aya::Ebpf;
use chaos_abi::net::MAX_SLOTS;

use crate::{
    attack::Attack,
    counters::Counters,
    ebpf,
    error::{Error, Result},
    faults::{Family, Fault},
    plan::Mechanism,
    state::{Record, StateFile},
    timebase::monotonic_ns,
};

/// An attack in progress.
#[derive(Debug)]
pub struct Running {
    pub attack: Attack,
    pub mechanism: Mechanism,
    /// CLOCK_MONOTONIC deadline written into the rule.
    pub deadline_ns: u64,
    pub started: Instant,
    /// Devices the attack acts on (network faults).
    pub interfaces: Vec<String>,
    slot: u32,
    part: Part,
}

/// Family-specific state of a running attack.
#[derive(Debug)]
enum Part {
    Net(net::Handle),
    Io(io::Handle),
    Clock(clock::Handle),
}

/// How an attack ended, as measured by the injector.
#[derive(Debug)]
pub struct Stopped {
    pub attack: Attack,
    pub counters: Counters,
    /// From the stop call to the rule deleted (the fault inert).
    pub inert_after: Duration,
    /// From the stop call to every attachment released.
    pub detached_after: Duration,
}

/// A family's start failed after `stopped` undid what it had begun: log
/// what could not be released (the state file still lists it for
/// `chaos recover`) and return the start's own error.
fn rolled_back(error: Error, stopped: (Result<Instant>, Result<()>)) -> Error {
    if let Err(cleanup) = stopped.1 {
        tracing::error!("rolling back a failed start: {cleanup}");
    }
    error
}

/// What every family part works with.
pub struct Shared {
    pub ebpf: Ebpf,
    pub state: StateFile,
}

pub struct Injector {
    shared: Shared,
    net: net::Net,
    io: io::Io,
    clock: clock::Clock,
    slots: [bool; MAX_SLOTS as usize],
}

impl Injector {
    /// Load the fault object (maps created, programs not yet loaded).
    pub fn new(state: StateFile) -> Result<Self> {
        let ebpf = ebpf::load_faults()?;
        Ok(Self {
            shared: Shared { ebpf, state },
            net: net::Net::default(),
            io: io::Io::default(),
            clock: clock::Clock::default(),
            slots: [false; MAX_SLOTS as usize],
        })
    }

    pub fn state(&mut self) -> &mut StateFile {
        &mut self.shared.state
    }

    /// Start `attack` with `mechanism`. On failure nothing of this attack
    /// remains injected or attached.
    pub fn start(&mut self, attack: Attack, mechanism: Mechanism) -> Result<Running> {
        let slot = self.take_slot()?;
        let deadline_ns = monotonic_ns() + attack.duration.as_nanos() as u64;
        let started = Instant::now();
        let result = match (&attack.fault, &mechanism) {
            (fault, Mechanism::Net(m)) if fault.family() == Family::Net => self
                .net
                .start(&mut self.shared, &attack, m, slot, deadline_ns)
                .map(|(h, ifs)| (Part::Net(h), ifs)),
            (Fault::IoError(_), Mechanism::Io(m)) => self
                .io
                .start(&mut self.shared, &attack, m, slot, deadline_ns)
                .map(|(h, ifs)| (Part::Io(h), ifs)),
            (Fault::ClockSkew(_), Mechanism::Clock(m)) => self
                .clock
                .start(&mut self.shared, &attack, m, slot, deadline_ns)
                .map(|(h, ifs)| (Part::Clock(h), ifs)),
            (fault, mechanism) => Err(Error::kernel(
                "planning",
                anyhow::anyhow!("{} cannot be injected with {mechanism:?}", fault.kind()),
            )),
        };
        match result {
            Ok((part, interfaces)) => {
                Ok(Running { attack, mechanism, deadline_ns, started, interfaces, slot, part })
            }
            Err(e) => {
                self.slots[slot as usize] = false;
                Err(e)
            }
        }
    }

    /// Stop: rule out (inert at once), then release attachments.
    pub fn stop(&mut self, running: Running) -> Result<Stopped> {
        let t0 = Instant::now();
        let (inert, released) = match running.part {
            Part::Net(handle) => self.net.stop(&mut self.shared, &running.attack, handle),
            Part::Io(handle) => self.io.stop(&mut self.shared, &running.attack, handle),
            Part::Clock(handle) => self.clock.stop(&mut self.shared, &running.attack, handle),
        };
        let inert_after = inert.map(|at| at.duration_since(t0));
        self.slots[running.slot as usize] = false;
        let detached_after = t0.elapsed();
        let inert_after = inert_after?;
        released?;
        // Read after the rule went out: they include the last events.
        let counters = self.counters_of(running.attack.fault.family(), running.slot).unwrap_or_default();
        Ok(Stopped { attack: running.attack, counters, inert_after, detached_after })
    }

    /// Counters of a running attack, summed over CPUs.
    pub fn counters(&self, running: &Running) -> Result<Counters> {
        self.counters_of(running.attack.fault.family(), running.slot)
    }

    fn counters_of(&self, family: Family, slot: u32) -> Result<Counters> {
        match family {
            Family::Net => self.net.counters(&self.shared, slot),
            Family::Io => self.io.counters(&self.shared, slot),
            Family::Clock => self.clock.counters(&self.shared, slot),
        }
    }

    /// Record that an attack ended (state file).
    pub fn record_end(&mut self, attack: &Attack) -> Result<()> {
        self.shared.state.append(&Record::AttackEnded { id: attack.id.clone() })
    }

    fn take_slot(&mut self) -> Result<u32> {
        let free = self.slots.iter().position(|used| !used).ok_or_else(|| {
            Error::invalid(format!("more than {MAX_SLOTS} attacks at once in one chaos process"))
        })?;
        self.slots[free] = true;
        Ok(free as u32)
    }
}
