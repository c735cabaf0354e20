//! The agent's loop: the watcher's snapshot of this node's attacks, fed
//! to [`reconcile`] after every change and every second, and its actions
//! carried out: injections started and stopped, statuses patched.
//!
//! While the API server cannot be reached the watcher retries with
//! backoff (kube's default) and nothing changes here: running attacks go
//! on to their deadlines, none starts, none is stopped. On reconnect the
//! watcher lists again and the reconcile stops what was deleted meanwhile.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, SystemTime},
};

use chaos::metrics::Metrics;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        events::{Recorder, Reporter},
        watcher,
    },
};
use tokio::{signal::unix::SignalKind, sync::mpsc};

use super::{
    events,
    inject::{self, Finished, Injection},
    preflight::Missing,
    reconcile::{Action, Local, reconcile},
    status,
};
use crate::resources::{ChaosAttack, NODE_LABEL};

struct Agent {
    client: Client,
    node: String,
    /// The watcher's view: every attack of this node, by uid.
    seen: BTreeMap<String, ChaosAttack>,
    local: BTreeMap<String, Local>,
    /// The injections this process started and that have not ended, with
    /// their attack as started (for its events, even once deleted).
    started: BTreeMap<String, (Injection, ChaosAttack)>,
    /// Attacks whose decided end (refused, missed) has had its event.
    told: BTreeSet<String>,
    recorder: Recorder,
    /// Ends reported by injections: when, and what to write.
    ended: BTreeMap<String, (SystemTime, Finished)>,
    updates: mpsc::UnboundedSender<(String, Update)>,
    /// What this agent's pod lacks (preflight): attacks needing it are refused.
    missing: Arc<Vec<Missing>>,
    /// Fed by every attack's events.
    metrics: Metrics,
}

/// What an attack's thread tells the loop.
enum Update {
    /// The fault is in the kernel; `restarts` is the count to write.
    Injected {
        at: SystemTime,
        restarts: u32,
    },
    Finished(Finished),
}

/// Run until SIGTERM or SIGINT. Attacks running then are stopped and left
/// Running in their status: the next agent on this node resumes them for
/// the time left (a DaemonSet's rolling update), or their deadline passes.
pub async fn run(
    client: Client,
    node: String,
    missing: Vec<Missing>,
    metrics: Metrics,
) -> anyhow::Result<()> {
    let api: Api<ChaosAttack> = Api::all(client.clone());
    let config = watcher::Config::default().labels(&format!("{NODE_LABEL}={node}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let (updates, mut from_attacks) = mpsc::unbounded_channel();
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: "chaos-agent".into(), instance: Some(node.clone()) },
    );
    let mut agent = Agent {
        client,
        node,
        recorder,
        seen: BTreeMap::new(),
        local: BTreeMap::new(),
        started: BTreeMap::new(),
        told: BTreeSet::new(),
        ended: BTreeMap::new(),
        updates,
        missing: Arc::new(missing),
        metrics,
    };
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // The snapshot being listed (Init .. InitDone), swapped in when whole.
    let mut listing: Option<BTreeMap<String, ChaosAttack>> = None;
    let mut ready = false;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Init)) => listing = Some(BTreeMap::new()),
                Some(Ok(watcher::Event::InitApply(a))) => {
                    if let (Some(l), Some(uid)) = (listing.as_mut(), a.uid()) {
                        l.insert(uid, a);
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    agent.seen = listing.take().unwrap_or_default();
                    ready = true;
                }
                Some(Ok(watcher::Event::Apply(a))) => {
                    if let Some(uid) = a.uid() {
                        agent.seen.insert(uid, a);
                    }
                }
                Some(Ok(watcher::Event::Delete(a))) => {
                    if let Some(uid) = a.uid() {
                        agent.seen.remove(&uid);
                    }
                }
                Some(Err(e)) => tracing::warn!("watching ChaosAttacks: {e} (retrying)"),
                None => anyhow::bail!("the ChaosAttack watch ended"),
            },
            Some((uid, update)) = from_attacks.recv() => match update {
                Update::Injected { at, restarts } => {
                    agent.patch(&uid, status::running(at, restarts)).await;
                    if let Some((_, attack)) = agent.started.get(&uid) {
                        agent.record(events::injected(attack)).await;
                    }
                }
                Update::Finished(f) => agent.finish(uid, f).await,
            },
            _ = tick.tick() => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        if ready {
            agent.reconcile().await;
        }
    }
    agent.shutdown().await;
    Ok(())
}

impl Agent {
    async fn reconcile(&mut self) {
        let seen: Vec<ChaosAttack> = self.seen.values().cloned().collect();
        for action in reconcile(&seen, &self.local, &self.node, SystemTime::now()) {
            match action {
                Action::Start { uid, remaining, resume } => self.start(&uid, remaining, resume).await,
                Action::Stop { uid } => {
                    if let Some((injection, _)) = self.started.get(&uid) {
                        tracing::info!(uid, "deleted: stopping its attack");
                        injection.stop();
                    }
                }
                Action::Report { uid, phase, reason, message } => {
                    let patch = match self.ended.get(&uid) {
                        Some((at, f)) => status::finished(*at, f),
                        None => {
                            if let Some(attack) = self.seen.get(&uid)
                                && self.told.insert(uid.clone())
                            {
                                let f = Finished {
                                    phase,
                                    reason: reason.clone(),
                                    message: message.clone(),
                                    ..Default::default()
                                };
                                self.record(events::finished(attack, &f)).await;
                            }
                            status::decided(SystemTime::now(), phase, reason.as_deref(), message.as_deref())
                        }
                    };
                    self.patch(&uid, patch).await;
                }
                Action::Forget { uid } => {
                    self.local.remove(&uid);
                    self.ended.remove(&uid);
                    self.told.remove(&uid);
                }
            }
        }
    }

    async fn start(&mut self, uid: &str, remaining: Duration, resume: bool) {
        let Some(attack) = self.seen.get(uid).cloned() else { return };
        let restarts = attack.status.as_ref().map_or(0, |s| s.agent_restarts) + u32::from(resume);
        let (injected, done) = (self.updates.clone(), self.updates.clone());
        let (a, b) = (uid.to_owned(), uid.to_owned());
        let started = inject::start(
            &attack,
            self.missing.clone(),
            self.metrics.clone(),
            move || {
                let _ = injected.send((a, Update::Injected { at: SystemTime::now(), restarts }));
            },
            move |f| {
                let _ = done.send((b, Update::Finished(f)));
            },
        );
        match started {
            Ok(injection) => {
                tracing::info!(uid, name = attack.name_any(), ?remaining, resume, "starting");
                self.local.insert(uid.to_owned(), Local::Running);
                self.started.insert(uid.to_owned(), (injection, attack));
            }
            Err(e) => tracing::error!(uid, "cannot start a thread for the attack: {e}"),
        }
    }

    async fn finish(&mut self, uid: String, f: Finished) {
        if let Some((injection, attack)) = self.started.remove(&uid) {
            injection.join();
            self.record(events::finished(&attack, &f)).await;
        }
        tracing::info!(uid, phase = ?f.phase, reason = ?f.reason, message = ?f.message, "ended");
        let at = SystemTime::now();
        // Gone from the API already (deleted): nothing to write.
        if self.seen.contains_key(&uid) {
            self.patch(&uid, status::finished(at, &f)).await;
        }
        self.local.insert(
            uid.clone(),
            Local::Ended { phase: f.phase, reason: f.reason.clone().unwrap_or_default() },
        );
        self.ended.insert(uid, (at, f));
    }

    async fn patch(&self, uid: &str, patch: serde_json::Value) {
        let Some(attack) = self.seen.get(uid) else { return };
        let api: Api<ChaosAttack> =
            Api::namespaced(self.client.clone(), &attack.namespace().unwrap_or_default());
        if let Err(e) =
            api.patch_status(&attack.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await
        {
            // Written again by the next reconcile while the status is not final.
            tracing::warn!(uid, "patching the status of {}: {e}", attack.name_any());
        }
    }

    /// Record `events`; one the API refuses is only logged (the status
    /// says the same).
    async fn record(&self, events: Vec<(kube::runtime::events::Event, ObjectReference)>) {
        for (event, on) in events {
            if let Err(e) = self.recorder.publish(&event, &on).await {
                tracing::warn!("recording event {} on {:?} {:?}: {e}", event.reason, on.kind, on.name);
            }
        }
    }

    async fn shutdown(&mut self) {
        for (injection, _) in self.started.values() {
            injection.stop();
        }
        let started = std::mem::take(&mut self.started);
        let _ = tokio::task::spawn_blocking(move || {
            for (injection, _) in started.into_values() {
                injection.join();
            }
        })
        .await;
    }
}
