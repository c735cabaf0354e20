//! The injector: one loaded fault object, the rules in its maps, and the
//! links that make the kernel run it.
//!
//! Starting an attack writes its rule (with the kernel-side deadline) and
//! then attaches what is not attached yet; stopping deletes the rule first,
//! which makes the fault inert at once, then detaches what no other attack
//! uses. Each fault family has its own part (`net`, ...) with its own maps
//! and programs, behind [`family::FamilyInjector`], on the shared rule
//! table (`rules`) and link sets (`links`); this module allocates counter
//! slots and deadlines and dispatches.

mod block;
mod clock;
mod conn;
mod cpu;
mod dns;
mod family;
mod guarded;
mod io;
mod kill;
mod links;
mod listeners;
mod maps;
mod memory;
mod net;
mod pause;
mod receive;
mod reset;
mod rules;

use std::time::{Duration, Instant};

use aya::Ebpf;
use chaos_abi::net::MAX_SLOTS;

use self::family::FamilyInjector;
use crate::{
    attack::Attack,
    counters::Counters,
    ebpf,
    error::{Error, Result},
    plan::{Ancestry, Mechanism, Planned},
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
    /// When the rule was written (the deadline is one duration later).
    pub started: Instant,
    slot: u32,
    part: Part,
}

impl Running {
    /// The devices the attack acts on (network faults; none for others).
    pub fn interfaces(&self) -> &[String] {
        match &self.part {
            Part::Net(handle) => &handle.interfaces,
            Part::Dns(handle) => &handle.interfaces,
            Part::Conn(_)
            | Part::Reset(_)
            | Part::Io(_)
            | Part::Clock(_)
            | Part::Pause(_)
            | Part::Cpu(_)
            | Part::Kill(_)
            | Part::Memory(_)
            | Part::Block(_) => &[],
        }
    }
}

/// Family-specific state of a running attack.
#[derive(Debug)]
enum Part {
    Net(net::Handle),
    Conn(conn::Handle),
    Reset(reset::Handle),
    Dns(dns::Handle),
    Io(io::Handle),
    Clock(clock::Handle),
    Pause(pause::Handle),
    Cpu(cpu::Handle),
    Kill(kill::Handle),
    Memory(memory::Handle),
    Block(block::Handle),
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

/// What every family part works with.
pub struct Shared {
    pub ebpf: Ebpf,
    pub state: StateFile,
}

pub struct Injector {
    /// No attack's rule is written for longer than until this time of day
    /// (`experiment::Options::ends_by`): a deadline chosen by someone else,
    /// which loading the programs must not push back.
    pub ends_by: Option<std::time::SystemTime>,
    shared: Shared,
    net: net::Net,
    conn: conn::Conn,
    reset: reset::Reset,
    dns: dns::Dns,
    io: io::Io,
    clock: clock::Clock,
    pause: pause::Pause,
    cpu: cpu::Cpu,
    kill: kill::Kill,
    memory: memory::Memory,
    block: block::Block,
    slots: [bool; MAX_SLOTS as usize],
}

/// Check what `attack` needs of the machine beyond what planning read
/// (the devices a network fault acts on, the paths of an I/O fault), without
/// loading or changing anything. The runner calls it for every attack
/// before the steady state, so that bad input is refused before the run
/// begins, not after other attacks were injected. The start checks again:
/// the target may have moved meanwhile.
pub fn preflight(attack: &Attack, planned: &Planned) -> Result<()> {
    match planned {
        Planned::Net(m, f) => net::preflight(attack, m, f),
        Planned::Io(_, f) => io::preflight(attack, f),
        Planned::Dns(..) => dns::preflight(attack),
        Planned::Pause(..) => pause::preflight(attack).map(drop),
        Planned::Cpu(_, f) => cpu::preflight(attack, f).map(drop),
        Planned::Kill(..) => kill::preflight(attack),
        Planned::Memory(_, f) => memory::preflight(attack, f).map(drop),
        Planned::Block(_, f) => block::preflight(attack, f).map(drop),
        Planned::Conn(..) | Planned::Reset(..) | Planned::Clock(..) => Ok(()),
    }
}

impl Injector {
    /// Load the fault object (maps created, programs not yet loaded), its
    /// programs matching cgroups by `ancestry` (crate::ancestry).
    pub fn new(state: StateFile, ancestry: Ancestry) -> Result<Self> {
        let ebpf = ebpf::load_faults(&crate::ancestry::global(ancestry)?)?;
        Ok(Self {
            ends_by: None,
            shared: Shared { ebpf, state },
            net: net::Net::default(),
            conn: conn::Conn::default(),
            reset: reset::Reset::default(),
            dns: dns::Dns::default(),
            io: io::Io::default(),
            clock: clock::Clock::default(),
            pause: pause::Pause::default(),
            cpu: cpu::Cpu::default(),
            kill: kill::Kill::default(),
            memory: memory::Memory::default(),
            block: block::Block::default(),
            slots: [false; MAX_SLOTS as usize],
        })
    }

    pub fn state(&mut self) -> &mut StateFile {
        &mut self.shared.state
    }

    /// Start `attack` as `planned`. On failure nothing of this attack
    /// remains injected or attached.
    pub fn start(&mut self, mut attack: Attack, planned: Planned) -> Result<Running> {
        let slot = self.take_slot()?;
        let shared = &mut self.shared;
        let deadline = std::cell::Cell::new(None);
        let at = family::At { attack: &attack, slot, deadline: &deadline, ends_by: self.ends_by };
        let result = match &planned {
            Planned::Net(m, f) => family::start(&mut self.net, shared, at.with(m, f)).map(Part::Net),
            Planned::Conn(m, f) => family::start(&mut self.conn, shared, at.with(m, f)).map(Part::Conn),
            Planned::Reset(m, f) => family::start(&mut self.reset, shared, at.with(m, f)).map(Part::Reset),
            Planned::Dns(m, f) => family::start(&mut self.dns, shared, at.with(m, f)).map(Part::Dns),
            Planned::Io(m, f) => family::start(&mut self.io, shared, at.with(m, f)).map(Part::Io),
            Planned::Clock(m, f) => family::start(&mut self.clock, shared, at.with(m, f)).map(Part::Clock),
            Planned::Pause(m, f) => family::start(&mut self.pause, shared, at.with(m, f)).map(Part::Pause),
            Planned::Cpu(m, f) => family::start(&mut self.cpu, shared, at.with(m, f)).map(Part::Cpu),
            Planned::Kill(m, f) => family::start(&mut self.kill, shared, at.with(m, f)).map(Part::Kill),
            Planned::Memory(m, f) => family::start(&mut self.memory, shared, at.with(m, f)).map(Part::Memory),
            Planned::Block(m, f) => family::start(&mut self.block, shared, at.with(m, f)).map(Part::Block),
        };
        let mechanism = planned.mechanism();
        match result {
            Ok(part) => {
                // When the rule was written: the controller's stop comes
                // one duration later, with the kernel's deadline.
                let (deadline_ns, started, duration) = deadline.get().unwrap_or_else(|| {
                    debug_assert!(false, "the family wrote no rule");
                    (monotonic_ns(), Instant::now(), attack.duration)
                });
                // Shortened to `ends_by`: the controller stops it then too.
                attack.duration = duration;
                Ok(Running { attack, mechanism, deadline_ns, started, slot, part })
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
            Part::Conn(handle) => self.conn.stop(&mut self.shared, &running.attack, handle),
            Part::Reset(handle) => self.reset.stop(&mut self.shared, &running.attack, handle),
            Part::Dns(handle) => self.dns.stop(&mut self.shared, &running.attack, handle),
            Part::Io(handle) => self.io.stop(&mut self.shared, &running.attack, handle),
            Part::Clock(handle) => self.clock.stop(&mut self.shared, &running.attack, handle),
            Part::Pause(handle) => self.pause.stop(&mut self.shared, &running.attack, handle),
            Part::Cpu(handle) => self.cpu.stop(&mut self.shared, &running.attack, handle),
            Part::Kill(handle) => self.kill.stop(&mut self.shared, &running.attack, handle),
            Part::Memory(handle) => self.memory.stop(&mut self.shared, &running.attack, handle),
            Part::Block(handle) => self.block.stop(&mut self.shared, &running.attack, handle),
        };
        let inert_after = inert.map(|at| at.duration_since(t0));
        self.slots[running.slot as usize] = false;
        let detached_after = t0.elapsed();
        let inert_after = inert_after?;
        released?;
        // Read after the rule went out: they include the last events.
        let counters = self.counters_of(&running.mechanism, running.slot).unwrap_or_default();
        Ok(Stopped { attack: running.attack, counters, inert_after, detached_after })
    }

    /// Counters of a running attack, summed over CPUs.
    pub fn counters(&self, running: &Running) -> Result<Counters> {
        self.counters_of(&running.mechanism, running.slot)
    }

    fn counters_of(&self, mechanism: &Mechanism, slot: u32) -> Result<Counters> {
        match mechanism {
            Mechanism::Net(_) => self.net.counters(&self.shared, slot),
            Mechanism::Conn(_) => self.conn.counters(&self.shared, slot),
            Mechanism::Reset(_) => self.reset.counters(&self.shared, slot),
            Mechanism::Dns(_) => self.dns.counters(&self.shared, slot),
            Mechanism::Io(_) => self.io.counters(&self.shared, slot),
            Mechanism::Clock(_) => self.clock.counters(&self.shared, slot),
            Mechanism::Pause(_) => self.pause.counters(&self.shared, slot),
            Mechanism::Cpu(_) => self.cpu.counters(&self.shared, slot),
            Mechanism::Kill(_) => self.kill.counters(&self.shared, slot),
            Mechanism::Memory(_) => self.memory.counters(&self.shared, slot),
            Mechanism::Block(_) => self.block.counters(&self.shared, slot),
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
