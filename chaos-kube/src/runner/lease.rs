//! Leader election through a `coordination.k8s.io/v1` Lease, so that one
//! runner of a Deployment's replicas runs experiments: the holder renews
//! the lease every [`RENEW`]; another replica takes it once it has not
//! been renewed for its duration. kube-runtime has no elector of its own,
//! and the crates that offer one trail kube's releases; the protocol is
//! the one client-go's leaderelection package follows (holderIdentity,
//! renewTime, leaseDurationSeconds; an update names the resourceVersion it
//! read, so two replicas taking the lease at once cannot both succeed).
//!
//! A holder that cannot renew in time stops running experiments before
//! another can take over: it rolls its attacks back and exits (see
//! `runner::run`).

use std::time::{Duration, SystemTime};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{PostParams, entry::Entry},
};

/// How long a lease holds without renewal.
pub const DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews.
pub const RENEW: Duration = Duration::from_secs(5);

/// What to do about the lease as it was read.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ours to take (free, or expired) or to renew (ours).
    Take,
    /// Another holds it: look again after this long.
    Wait(Duration),
}

/// The pure part: `lease` as read (`None`: there is none), `me`, `now`.
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: SystemTime) -> Decision {
    let Some(spec) = lease else { return Decision::Take };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return Decision::Take;
    }
    let duration =
        spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).map_or(DURATION, Duration::from_secs);
    let renewed = spec.renew_time.as_ref().map(|t| SystemTime::from(t.0));
    match renewed.map(|r| r + duration) {
        Some(expires) if expires > now => {
            Decision::Wait(expires.duration_since(now).unwrap_or(RENEW).min(RENEW))
        }
        _ => Decision::Take,
    }
}

/// The lease as `me` writes it, taking it over from `before` or renewing.
pub fn claimed(before: Option<&LeaseSpec>, me: &str, now: SystemTime) -> LeaseSpec {
    let at = MicroTime(Timestamp::try_from(now).unwrap_or(Timestamp::UNIX_EPOCH));
    let ours = before.and_then(|b| b.holder_identity.as_deref()) == Some(me);
    let transitions = before.and_then(|b| b.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(DURATION.as_secs() as i32),
        acquire_time: if ours { before.and_then(|b| b.acquire_time.clone()) } else { Some(at.clone()) },
        renew_time: Some(at),
        lease_transitions: Some(if ours || before.is_none() { transitions } else { transitions + 1 }),
        ..LeaseSpec::default()
    }
}

/// A lease in one namespace, held or sought by `me`.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    me: String,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, me: &str) -> Self {
        Self { api: Api::namespaced(client, namespace), name: name.to_owned(), me: me.to_owned() }
    }

    /// One attempt to take or renew the lease: `Ok(None)` when it is ours
    /// now, `Ok(Some(wait))` when another holds it.
    pub async fn try_take(&self) -> kube::Result<Option<Duration>> {
        let now = SystemTime::now();
        match self.api.entry(&self.name).await? {
            Entry::Occupied(mut e) => {
                let before = e.get().spec.clone();
                if let Decision::Wait(wait) = decide(before.as_ref(), &self.me, now) {
                    return Ok(Some(wait));
                }
                e.get_mut().spec = Some(claimed(before.as_ref(), &self.me, now));
                // Replaces with the resourceVersion read: a replica that
                // took the lease meanwhile makes this a 409 Conflict.
                e.commit(&PostParams::default()).await.map_err(entry_error)?;
                Ok(None)
            }
            Entry::Vacant(e) => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                    spec: Some(claimed(None, &self.me, now)),
                };
                e.insert(lease).commit(&PostParams::default()).await.map_err(entry_error)?;
                Ok(None)
            }
        }
    }

    /// Give the lease up (on a clean exit), so that another replica need
    /// not wait for it to expire.
    pub async fn release(&self) {
        if let Ok(Entry::Occupied(mut e)) = self.api.entry(&self.name).await
            && e.get().spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.me.as_str())
        {
            if let Some(spec) = e.get_mut().spec.as_mut() {
                spec.holder_identity = None;
                spec.renew_time = None;
            }
            let _ = e.commit(&PostParams::default()).await;
        }
    }
}

fn entry_error(e: kube::api::entry::CommitError) -> kube::Error {
    match e {
        kube::api::entry::CommitError::Save(e) => e,
        kube::api::entry::CommitError::Validate(e) => {
            kube::Error::Service(format!("the lease cannot be written: {e}").into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn held_by(who: &str, renewed: u64) -> LeaseSpec {
        claimed(None, who, at(renewed))
    }

    #[test]
    fn a_free_expired_or_own_lease_is_taken() {
        assert_eq!(decide(None, "a", at(0)), Decision::Take);
        assert_eq!(decide(Some(&LeaseSpec::default()), "a", at(0)), Decision::Take);
        assert_eq!(decide(Some(&held_by("a", 0)), "a", at(1)), Decision::Take);
        // Expired: not renewed for its duration.
        assert_eq!(decide(Some(&held_by("b", 0)), "a", at(15)), Decision::Take);
        assert_eq!(decide(Some(&held_by("b", 0)), "a", at(100)), Decision::Take);
    }

    #[test]
    fn a_lease_another_renews_is_waited_for() {
        assert_eq!(decide(Some(&held_by("b", 0)), "a", at(12)), Decision::Wait(Duration::from_secs(3)));
        // Never longer than a renewal period between two looks.
        assert_eq!(decide(Some(&held_by("b", 0)), "a", at(1)), Decision::Wait(RENEW));
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_keeps_the_acquire_time() {
        let first = claimed(None, "a", at(0));
        assert_eq!(first.lease_transitions, Some(0));
        let renewed = claimed(Some(&first), "a", at(5));
        assert_eq!(renewed.acquire_time, first.acquire_time);
        assert_eq!(renewed.lease_transitions, Some(0));
        assert_ne!(renewed.renew_time, first.renew_time);
        let taken = claimed(Some(&renewed), "b", at(30));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.acquire_time, taken.renew_time);
        assert_eq!(taken.lease_duration_seconds, Some(15));
    }
}
