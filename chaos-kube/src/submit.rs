//! `chaos-kube run FILE`: an experiment file run on a cluster from a
//! laptop or a CI job, with the exit codes of a local `chaos run`. The
//! file is validated here first (the same parser, the same messages), then
//! created as a `ChaosExperiment` named `NAME-xxxxx` (each run its own
//! object), whose status is followed until the runner writes a verdict.
//! Interrupted (SIGINT, SIGTERM), it deletes the object: the runner then
//! rolls the faults back, as a local run does on a signal.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use chaos::error::ExitCode;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ObjectMeta, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::Value;
use tokio::signal::unix::SignalKind;

use crate::{
    resources::{ChaosExperiment, ChaosExperimentSpec, ChaosExperimentStatus},
    runner::reconcile::refusals,
};

/// After this long without a status, say that no runner may be running.
const NO_RUNNER_HINT: Duration = Duration::from_secs(30);

pub struct Submit {
    pub file: PathBuf,
    pub set: Vec<(String, String)>,
    /// Else the envelope's, else the kubeconfig's.
    pub namespace: Option<String>,
    pub report: Option<PathBuf>,
    pub junit: Option<PathBuf>,
}

/// What a run ends with: the exit code, or an error (exit 5).
pub async fn run(s: Submit) -> anyhow::Result<std::process::ExitCode> {
    let text = std::fs::read_to_string(&s.file).with_context(|| format!("reading {}", s.file.display()))?;
    // The parser of `chaos validate`: a file that would not run locally
    // does not reach the cluster.
    let file = s.file.display().to_string();
    let exp = match chaos::experiment::parse(&file, &text, &s.set) {
        Ok(e) => e,
        Err(d) => {
            eprint!("{d}");
            return Ok(code(ExitCode::Invalid));
        }
    };
    let (name, ns_in_file, spec) = document(&text, &s.set)?;
    let client = Client::try_default().await.context("finding the cluster (KUBECONFIG, ~/.kube/config)")?;
    let namespace = s.namespace.or(ns_in_file).unwrap_or_else(|| client.default_namespace().to_owned());
    let refused = refusals(&exp, &namespace);
    if !refused.is_empty() {
        for r in &refused {
            eprintln!("chaos-kube: {file}: {r}");
        }
        return Ok(code(ExitCode::Invalid));
    }
    let api: Api<ChaosExperiment> = Api::namespaced(client.clone(), &namespace);
    let mut object = ChaosExperiment::new("", spec);
    object.metadata = ObjectMeta {
        generate_name: Some(format!("{name}-")),
        namespace: Some(namespace.clone()),
        ..ObjectMeta::default()
    };
    let created =
        api.create(&PostParams::default(), &object).await.context("creating the ChaosExperiment")?;
    let made = created.name_any();
    eprintln!("chaos-kube: ChaosExperiment {namespace}/{made} created; following its status");
    let status = follow(&api, &made).await?;
    let Some(status) = status else {
        return Ok(code(ExitCode::Aborted));
    };
    if let Some(report) = &status.report {
        let maps: Api<ConfigMap> = Api::namespaced(client, &namespace);
        match maps.get(report).await {
            Ok(map) => save(&map, &s.report, &s.junit)?,
            Err(e) => eprintln!("chaos-kube: the report ConfigMap {report} cannot be read: {e}"),
        }
    }
    eprintln!(
        "chaos-kube: {}: {} — {}",
        made,
        status.verdict.as_deref().unwrap_or("(no verdict)"),
        status.message.as_deref().unwrap_or_default()
    );
    Ok(std::process::ExitCode::from(status.exit_code.unwrap_or(ExitCode::Internal as u8)))
}

fn code(c: ExitCode) -> std::process::ExitCode {
    std::process::ExitCode::from(c as u8)
}

/// The experiment's name, namespace (an envelope's) and spec, with `--set`
/// values written into its variables' defaults.
fn document(
    text: &str,
    set: &[(String, String)],
) -> anyhow::Result<(String, Option<String>, ChaosExperimentSpec)> {
    let doc: Value = serde_yaml_ng::from_str(text).context("reading the file as YAML")?;
    let (name, namespace, mut spec) = if doc.get("kind").is_some() {
        let meta = &doc["metadata"];
        (
            meta["name"].as_str().unwrap_or_default().to_owned(),
            meta["namespace"].as_str().map(str::to_owned),
            doc["spec"].clone(),
        )
    } else {
        let mut spec = doc.clone();
        let name = spec.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        if let Some(o) = spec.as_object_mut() {
            o.remove("name");
        }
        (name, None, spec)
    };
    for (k, v) in set {
        spec["variables"][k] = Value::String(v.clone());
    }
    let spec: ChaosExperimentSpec = serde_json::from_value(spec).context("reading the experiment")?;
    Ok((name, namespace, spec))
}

/// Print each change of the status until the verdict; `None` when
/// interrupted (the object is then deleted: the runner rolls back).
async fn follow(api: &Api<ChaosExperiment>, name: &str) -> anyhow::Result<Option<ChaosExperimentStatus>> {
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = watcher(api.clone(), config).default_backoff().boxed();
    let mut last = ChaosExperimentStatus::default();
    // Said once if no runner has taken it up by then.
    let hint = tokio::time::sleep(NO_RUNNER_HINT);
    tokio::pin!(hint);
    let mut hinted = false;
    loop {
        tokio::select! {
            change = changes.next() => match change {
                // The name is also checked here: a field selector is the
                // server's to honour, and this must not follow another.
                Some(Ok(watcher::Event::Apply(exp) | watcher::Event::InitApply(exp))) if exp.name_any() == name => {
                    let status = exp.status.unwrap_or_default();
                    say_changes(&last, &status);
                    if status.phase.as_deref() == Some("Done") {
                        return Ok(Some(status));
                    }
                    last = status;
                }
                Some(Ok(watcher::Event::Delete(exp))) if exp.name_any() == name => {
                    anyhow::bail!("{name} was deleted by someone else before its verdict (its runner rolls it back)");
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => eprintln!("chaos-kube: watching {name}: {e} (retrying)"),
                None => anyhow::bail!("the watch of {name} ended"),
            },
            () = &mut hint, if !hinted => {
                hinted = true;
                if last.phase.is_none() {
                    eprintln!(
                        "chaos-kube: no runner has taken {name} up after {}s: is the runner deployed \
                         (deploy/controller.yaml; `kubectl -n chaos-system get deployment chaos-runner`)?",
                        NO_RUNNER_HINT.as_secs()
                    );
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    eprintln!("chaos-kube: interrupted: deleting {name}, which rolls its faults back");
    api.delete(name, &DeleteParams::background()).await.context("deleting the ChaosExperiment")?;
    Ok(None)
}

fn say_changes(before: &ChaosExperimentStatus, now: &ChaosExperimentStatus) {
    if now.message != before.message
        && let Some(m) = &now.message
    {
        eprintln!("  {m}");
    }
    for p in now.picked.iter().filter(|p| !before.picked.contains(p)) {
        eprintln!("  picked {p}");
    }
    for a in now.attacks.iter().filter(|a| !before.attacks.contains(a)) {
        eprintln!("  ChaosAttack {a}");
    }
}

/// The reports of the ConfigMap, where `chaos run` would write them.
fn save(map: &ConfigMap, report: &Option<PathBuf>, junit: &Option<PathBuf>) -> anyhow::Result<()> {
    let empty = BTreeMap::new();
    let data = map.data.as_ref().unwrap_or(&empty);
    if let Some(summary) = data.get("summary.txt") {
        eprint!("{summary}");
    }
    for (path, key) in [(report, "report.json"), (junit, "junit.xml")] {
        if let (Some(path), Some(text)) = (path, data.get(key)) {
            write_new(path, text)?;
        }
    }
    Ok(())
}

/// As chaos writes its reports: a new file renamed over `path`, so that a
/// symlink planted there is replaced, not followed (chaos::safe_fs).
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    chaos::safe_fs::write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &str = "name: web-frozen\nvariables: {loss: 5}\ntargets: {web: {pod-selector: app=web}}\nhypothesis: {probes: []}\nmethod:\n  - {fault: net-loss, percent: '${loss}', duration: 10s}\n";

    #[test]
    fn a_bare_file_and_an_envelope_give_the_same_spec() {
        let (name, ns, spec) = document(BARE, &[]).unwrap();
        assert_eq!((name.as_str(), ns), ("web-frozen", None));
        assert_eq!(spec.variables["loss"], 5);
        assert!(spec.targets["web"].pod_selector.as_deref() == Some("app=web"));
        let indented: String = BARE.lines().skip(1).map(|l| format!("  {l}\n")).collect();
        let wrapped = format!(
            "apiVersion: chaos.dev/v1alpha1\nkind: ChaosExperiment\nmetadata: {{name: web-frozen, namespace: shop}}\nspec:\n{indented}"
        );
        let (name2, ns2, spec2) = document(&wrapped, &[]).unwrap();
        assert_eq!((name2.as_str(), ns2.as_deref()), ("web-frozen", Some("shop")));
        assert_eq!(spec2, spec);
    }

    #[test]
    fn set_values_become_the_variables_defaults() {
        let (_, _, spec) = document(BARE, &[("loss".into(), "20".into())]).unwrap();
        assert_eq!(spec.variables["loss"], "20");
    }
}
