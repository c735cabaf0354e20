//! What a fault family's injector implements, and the start/rollback every
//! family shares.
//!
//! A family owns its maps (a [`RuleTable`](super::rules::RuleTable) and its
//! configuration), its attachments ([`LinkSet`](super::links::LinkSet)s)
//! and a handle per running attack. The injector allocates the counter slot
//! and the deadline, and dispatches here.

use std::{
    cell::Cell,
    time::{Duration, Instant, SystemTime},
};

use super::Shared;
use crate::{attack::Attack, counters::Counters, error::Result, timebase::monotonic_ns};

/// When a rule was written: its CLOCK_MONOTONIC deadline, the instant, and
/// the duration it got.
pub(super) type Fixed = (u64, Instant, Duration);

/// Where an attack starts: the attack, its counter slot, where its
/// deadline goes once fixed, and the time of day it may not outlive.
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub attack: &'a Attack,
    pub slot: u32,
    pub deadline: &'a Cell<Option<Fixed>>,
    pub ends_by: Option<SystemTime>,
}

impl<'a> At<'a> {
    /// The start of family `F`, with the fault and mechanism the planner
    /// paired.
    pub fn with<F: FamilyInjector>(self, mechanism: &'a F::Mechanism, fault: &'a F::Fault) -> Start<'a, F> {
        Start {
            attack: self.attack,
            fault,
            mechanism,
            slot: self.slot,
            deadline: self.deadline,
            ends_by: self.ends_by,
        }
    }
}

/// What starting an attack of family `F` is given.
pub(super) struct Start<'a, F: FamilyInjector> {
    pub attack: &'a Attack,
    /// The attack's fault, as the family's own type.
    pub fault: &'a F::Fault,
    pub mechanism: &'a F::Mechanism,
    pub slot: u32,
    deadline: &'a Cell<Option<Fixed>>,
    ends_by: Option<SystemTime>,
}

impl<F: FamilyInjector> Start<'_, F> {
    /// The attack's deadline (CLOCK_MONOTONIC), fixed now: its duration
    /// from the moment its rule is written. A family calls it just before
    /// writing the rule, after what may take long (loading and verifying
    /// programs: seconds on an emulated CPU), so that the fault acts for
    /// its whole duration — or, with an `ends_by`, until then if sooner:
    /// the time of day the attack's creator chose is not moved by the load.
    pub fn deadline_from_now(&self) -> u64 {
        let now = Instant::now();
        let duration = match self.ends_by {
            // At least a millisecond: a rule of no length would be a
            // rule past its deadline, which the programs pass untouched.
            Some(by) => self
                .attack
                .duration
                .min(by.duration_since(SystemTime::now()).unwrap_or_default().max(Duration::from_millis(1))),
            None => self.attack.duration,
        };
        let ns = monotonic_ns().saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
        self.deadline.set(Some((ns, now, duration)));
        ns
    }
}

/// What stopping returns: when the rule was gone (the fault inert), and
/// whether every attachment was released.
pub(super) type Stopping = (Result<Instant>, Result<()>);

pub(super) trait FamilyInjector: Sized {
    /// The family's faults (`faults/`).
    type Fault;
    /// The mechanism the planner chose for this family (`plan/`).
    type Mechanism;
    /// What a running attack holds; its default holds nothing.
    type Handle: Default;

    /// Write the rule (with its kernel-side deadline, from
    /// [`Start::deadline_from_now`]) and attach what is not attached yet,
    /// recording in `handle` what was taken as it goes: on an error,
    /// [`Self::stop`] releases exactly that.
    fn begin(
        &mut self,
        shared: &mut Shared,
        start: &Start<'_, Self>,
        handle: &mut Self::Handle,
    ) -> Result<()>;

    /// Delete the rule (the fault is inert from the returned instant on),
    /// then release the attachments.
    fn stop(
        &mut self,
        shared: &mut Shared,
        attack: &Attack,
        handle: Self::Handle,
    ) -> (Result<Instant>, Result<()>);

    /// The attack's counters, summed over CPUs, under the family's names.
    fn counters(&self, shared: &Shared, slot: u32) -> Result<Counters>;
}

/// Start an attack of `family`. On failure what it had begun is undone;
/// what could not be released is logged (the state file still lists it for
/// `chaos recover`) and the start's own error returned.
pub(super) fn start<F: FamilyInjector>(
    family: &mut F,
    shared: &mut Shared,
    start: Start<'_, F>,
) -> Result<F::Handle> {
    let mut handle = F::Handle::default();
    match family.begin(shared, &start, &mut handle) {
        Ok(()) => Ok(handle),
        Err(error) => {
            if let (_, Err(cleanup)) = family.stop(shared, start.attack, handle) {
                tracing::error!("rolling back a failed start: {cleanup}");
            }
            Err(error)
        }
    }
}
