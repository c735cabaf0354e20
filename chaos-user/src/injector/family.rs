//! What a fault family's injector implements, and the start/rollback every
//! family shares.
//!
//! A family owns its maps (a [`RuleTable`](super::rules::RuleTable) and its
//! configuration), its attachments ([`LinkSet`](super::links::LinkSet)s)
//! and a handle per running attack. The injector allocates the counter slot
//! and the deadline, and dispatches here.

use std::time::Instant;

use super::Shared;
use crate::{attack::Attack, counters::Counters, error::Result};

/// What starting an attack is given: the attack, the mechanism planned for
/// it, its counter slot, and its deadline (CLOCK_MONOTONIC) for the rule.
pub(super) struct Start<'a, M> {
    pub attack: &'a Attack,
    pub mechanism: &'a M,
    pub slot: u32,
    pub deadline_ns: u64,
}

impl<'a> Start<'a, ()> {
    /// The same start, with the family's mechanism.
    pub fn with<M>(&self, mechanism: &'a M) -> Start<'a, M> {
        Start { attack: self.attack, mechanism, slot: self.slot, deadline_ns: self.deadline_ns }
    }
}

/// What stopping returns: when the rule was gone (the fault inert), and
/// whether every attachment was released.
pub(super) type Stopping = (Result<Instant>, Result<()>);

pub(super) trait FamilyInjector {
    /// The mechanism the planner chose for this family (`plan/`).
    type Mechanism;
    /// What a running attack holds; its default holds nothing.
    type Handle: Default;

    /// Write the rule (with its kernel-side deadline) and attach what is
    /// not attached yet, recording in `handle` what was taken as it goes:
    /// on an error, [`Self::stop`] releases exactly that.
    fn begin(
        &mut self,
        shared: &mut Shared,
        start: &Start<'_, Self::Mechanism>,
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
    start: &Start<'_, F::Mechanism>,
) -> Result<F::Handle> {
    let mut handle = F::Handle::default();
    match family.begin(shared, start, &mut handle) {
        Ok(()) => Ok(handle),
        Err(error) => {
            if let (_, Err(cleanup)) = family.stop(shared, start.attack, handle) {
                tracing::error!("rolling back a failed start: {cleanup}");
            }
            Err(error)
        }
    }
}
