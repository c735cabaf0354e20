//! The runner (`chaos-kube controller`, a Deployment): it runs
//! `ChaosExperiment`s. One replica leads at a time ([`lease`]); the leader
//! watches the experiments, starts each new one on a thread of its own
//! ([`execute`]) and rolls back those a runner left Running when it
//! stopped ([`reconcile::decide`]). What it decides is pure and
//! unit-tested; this file is the wiring.
//!
//! When the leader cannot renew its lease (the API server unreachable) it
//! stops its runs before another replica may take over, and exits: a run
//! stopped this way deletes its attacks if it still can, and each attack
//! ends at its deadline on its node if it cannot.

pub mod execute;
pub mod lease;
pub mod pods;
pub mod reconcile;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    thread::JoinHandle,
    time::Instant,
};

use futures_util::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use tokio::signal::unix::SignalKind;

use self::{
    execute::{Cluster, Run, Stop},
    lease::Elector,
    pods::EXPERIMENT_LABEL,
    reconcile::Decision,
};
use crate::resources::{ChaosAttack, ChaosExperiment};

pub struct Options {
    /// Only this namespace's experiments (else every namespace's).
    pub namespace: Option<String>,
    /// Where the lease is: the runner's own namespace.
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica, as the lease and the statuses name it (its pod).
    pub identity: String,
}

/// Run until SIGTERM or SIGINT, or until the lease is lost (an error).
pub async fn run(client: Client, opts: Options) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let elector = Elector::new(client.clone(), &opts.lease_namespace, &opts.lease_name, &opts.identity);
    tracing::info!(
        lease = opts.lease_name,
        namespace = opts.lease_namespace,
        identity = opts.identity,
        "seeking the lease"
    );
    loop {
        let wait = match elector.try_take().await {
            Ok(None) => break,
            Ok(Some(wait)) => wait,
            Err(e) => {
                tracing::warn!("cannot read the lease: {e}");
                lease::RENEW
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
    tracing::info!(identity = opts.identity, "leading: running experiments");
    let mut runner = Runner {
        cluster: Cluster { client: client.clone(), handle: tokio::runtime::Handle::current() },
        identity: opts.identity.clone(),
        runs: BTreeMap::new(),
        finished: BTreeSet::new(),
    };
    let api: Api<ChaosExperiment> = match &opts.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut renew = tokio::time::interval(lease::RENEW);
    let mut renewed = Instant::now();
    // Give up before the lease can expire: a renewal period short of it.
    let give_up = lease::DURATION - lease::RENEW;
    let outcome = loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e))) => runner.seen(e),
                Some(Ok(watcher::Event::Delete(e))) => runner.deleted(&e),
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                Some(Err(e)) => tracing::warn!("watching ChaosExperiments: {e}"),
                None => break Err(anyhow::anyhow!("the watch of ChaosExperiments ended")),
            },
            _ = renew.tick() => {
                runner.reap();
                match elector.try_take().await {
                    Ok(None) => renewed = Instant::now(),
                    Ok(Some(_)) => break Err(anyhow::anyhow!("another runner took the lease")),
                    Err(e) if renewed.elapsed() >= give_up => {
                        break Err(anyhow::anyhow!("the lease could not be renewed for {}s: {e}", give_up.as_secs()));
                    }
                    Err(e) => tracing::warn!("cannot renew the lease (will retry): {e}"),
                }
            }
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
        }
    };
    let why = match &outcome {
        Ok(()) => "the runner is stopping".to_owned(),
        Err(e) => format!("the runner lost its lease ({e})"),
    };
    runner.stop_all(&why).await;
    if outcome.is_ok() {
        elector.release().await;
    }
    outcome
}

struct Runner {
    cluster: Cluster,
    identity: String,
    /// Running here, by uid.
    runs: BTreeMap<String, (Arc<Stop>, JoinHandle<()>)>,
    /// Ended here: a late event showing one Running is not an orphan.
    finished: BTreeSet<String>,
}

impl Runner {
    fn known(&self) -> BTreeSet<String> {
        self.runs.keys().chain(&self.finished).cloned().collect()
    }

    fn seen(&mut self, exp: ChaosExperiment) {
        let Some(uid) = exp.uid() else { return };
        match reconcile::decide(&exp, &self.known()) {
            Decision::Start => {
                tracing::info!(experiment = exp.name_any(), namespace = exp.namespace(), "starting");
                let stop = Arc::new(Stop::default());
                let run = Run::new(self.cluster.clone(), exp.clone(), &self.identity, stop.clone());
                let name = format!("run-{}", exp.name_any());
                match std::thread::Builder::new().name(name).spawn(move || run.run()) {
                    Ok(handle) => {
                        self.runs.insert(uid, (stop, handle));
                    }
                    Err(e) => tracing::error!(experiment = exp.name_any(), "cannot start a thread: {e}"),
                }
            }
            Decision::Orphaned { runner } => {
                self.finished.insert(uid);
                let cluster = self.cluster.clone();
                tokio::spawn(async move { roll_back_orphan(&cluster.client, &exp, &runner).await });
            }
            Decision::Nothing => {}
        }
    }

    fn deleted(&mut self, exp: &ChaosExperiment) {
        if let Some((stop, _)) = exp.uid().and_then(|u| self.runs.get(&u)) {
            stop.ask("the ChaosExperiment was deleted");
        }
    }

    /// Forget the runs that ended.
    fn reap(&mut self) {
        let ended: Vec<String> =
            self.runs.iter().filter(|(_, (_, h))| h.is_finished()).map(|(u, _)| u.clone()).collect();
        for uid in ended {
            if let Some((_, handle)) = self.runs.remove(&uid) {
                let _ = handle.join();
            }
            self.finished.insert(uid);
        }
    }

    /// Stop every run (each deletes its attacks and writes its verdict),
    /// and wait for them.
    async fn stop_all(&mut self, why: &str) {
        for (stop, _) in self.runs.values() {
            stop.ask(why);
        }
        let handles: Vec<JoinHandle<()>> =
            std::mem::take(&mut self.runs).into_values().map(|(_, h)| h).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for h in handles {
                let _ = h.join();
            }
        })
        .await;
    }
}

/// An experiment another runner left Running: delete its attacks, end it
/// `aborted`.
async fn roll_back_orphan(client: &Client, exp: &ChaosExperiment, runner: &str) {
    let (Some(ns), Some(uid)) = (exp.namespace(), exp.uid()) else { return };
    let name = exp.name_any();
    let attacks: Api<ChaosAttack> = Api::namespaced(client.clone(), &ns);
    let params = ListParams::default().labels(&format!("{EXPERIMENT_LABEL}={uid}"));
    let mut deleted = Vec::new();
    match attacks.list(&params).await {
        Ok(list) => {
            for a in list {
                if attacks.delete(&a.name_any(), &DeleteParams::background()).await.is_ok() {
                    deleted.push(a.name_any());
                }
            }
        }
        Err(e) => {
            tracing::warn!(experiment = name, "cannot list its attacks (they end at their deadlines): {e}")
        }
    }
    let message = format!(
        "the runner running it ({runner}) stopped before it ended; its ChaosAttacks were deleted ({})",
        if deleted.is_empty() { "none left".to_owned() } else { deleted.join(", ") }
    );
    tracing::warn!(experiment = name, "{message}");
    let now = Timestamp::try_from(std::time::SystemTime::now()).unwrap_or(Timestamp::UNIX_EPOCH);
    let patch = Patch::Merge(json!({"status": {
        "phase": "Done", "verdict": "aborted", "exitCode": 2, "message": message,
        "step": null, "attacks": null, "endedAt": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
    }}));
    let api: Api<ChaosExperiment> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.patch_status(&name, &PatchParams::default(), &patch).await {
        tracing::warn!(experiment = name, "cannot write the status: {e}");
    }
}
