//! `chaos demo`: the main job on a built-in default. A sandbox with a small
//! HTTP service — in a real container where docker or podman runs one,
//! else in a cgroup and network namespace of its own; the library's
//! `experiments/lossy-link.yaml` run against it twice — with light loss, 5%
//! (the hypothesis holds) and heavy loss, 90% (it breaks: chaos aborts and
//! rolls back, and says how fast); verdicts; everything removed, on success,
//! failure and Ctrl-C alike.

pub mod container;
pub mod sandbox;
pub mod service;

use std::{fs, path::PathBuf};

use crate::{
    cli::run::execute,
    error::{Error, ExitCode, Result},
    events::Events,
    experiment::{self, Options, Verdict},
    report::Report,
    runtime::Runtime,
    session,
    signals::{self, SignalWatch},
};

/// The experiment the demo runs, exactly as shipped in experiments/.
pub const EXPERIMENT_FILE: &str = "experiments/lossy-link.yaml";
pub const EXPERIMENT: &str = include_str!("../../../experiments/lossy-link.yaml");

/// One run of the experiment.
pub struct Act {
    pub title: &'static str,
    pub loss: u32,
    pub duration: &'static str,
    pub expect: Verdict,
}

/// Each act's announced outcome must hold in every run, though loss is
/// random: the experiment's tolerances (max-latency 2500ms, timeout 3s, 3
/// failed checks in a row) are chosen from TCP's retransmission timers,
/// see the calculation at the top of experiments/lossy-link.yaml. At 5% a
/// check fails with probability 0.29% and the 10 s act is violated with
/// probability ~3e-7; at 90% a check fails with probability 0.997 and the
/// act holds with probability ~1e-7 (at 80%: 2e-4, at 60%: 13%).
pub const ACTS: &[Act] = &[
    Act {
        title: "light loss: the service should cope (TCP retransmits what is lost)",
        loss: 5,
        duration: "10s",
        expect: Verdict::Held,
    },
    Act {
        title: "heavy loss: the hypothesis should break, and chaos abort and roll back at once",
        loss: 90,
        duration: "30s",
        expect: Verdict::Violated,
    },
];

/// Where the demo's service runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// A container of the first runtime that runs one, else a process.
    Any,
    /// A container of this runtime, or the demo fails.
    Runtime(Runtime),
    /// A process in a cgroup of the demo's.
    Process,
}

/// Run the demo; `live` draws the live view. Reports go to `out`, or to a
/// new private directory ([`default_out`]).
pub fn run(out: Option<PathBuf>, live: bool, host: Host) -> Result<ExitCode> {
    session::require_root("chaos demo (it creates network namespaces, a cgroup and eBPF attachments)")?;
    // Before anything is made: from here on Ctrl-C is a message, and the
    // sandbox is removed whatever happens.
    let signals = SignalWatch::install().map_err(|e| Error::kernel("installing signal handlers", e))?;
    for what in sandbox::remove_stale() {
        println!("removed {what}, left by a demo that was killed");
    }
    let out = match out {
        Some(dir) => {
            prepare(&dir)?;
            dir
        }
        None => default_out()?,
    };
    let out = out.as_path();
    println!(
        "chaos demo: a sandboxed service, an experiment against it, verdicts; everything is removed at the end.\n"
    );
    let container = match host {
        Host::Process => None,
        Host::Any => match container::DemoContainer::start(None, sandbox::PORT) {
            Ok(c) => Some(c),
            Err(why) => {
                println!(
                    "no container runtime ran the service ({why}):\nit runs as a process in a cgroup of its own.\n"
                );
                None
            }
        },
        Host::Runtime(r) => Some(container::DemoContainer::start(Some(r), sandbox::PORT).map_err(|why| {
            Error::environment(format!("the demo's service could not run in a container: {why}"))
        })?),
    };
    let mut sb = sandbox::Sandbox::create(container)?;
    let what = match &sb.container {
        Some(c) => format!("{} (busybox httpd)", c.label()),
        None => "a process".to_owned(),
    };
    println!(
        "sandbox: network namespaces {} and {} joined by a veth pair;\n         an HTTP service on {}: {what}, in cgroup {}",
        sb.service_ns,
        sb.client_ns,
        sb.service_addr,
        sb.cgroup.display()
    );
    sb.start_service()?;
    if let Some(sig) = signals.pending() {
        println!("{} received: removing the sandbox", signals::name(sig));
        return Ok(ExitCode::Aborted);
    }
    println!("         {} answers from the client namespace\n", sb.health_url());
    let mut results: Vec<(&Act, Report)> = Vec::new();
    for (n, act) in ACTS.iter().enumerate() {
        println!("act {}: {EXPERIMENT_FILE} with {}% loss — {}", n + 1, act.loss, act.title);
        // The container by its name, as users name theirs; else the cgroup.
        let (cgroup, container) = match &sb.container {
            Some(c) => (String::new(), c.name.clone()),
            None => (sb.cgroup_rel.clone(), String::new()),
        };
        let sets: Vec<(String, String)> = [
            ("target", cgroup),
            ("container", container),
            ("url", sb.health_url()),
            ("probe-netns", sb.client_ns.clone()),
            ("loss", act.loss.to_string()),
            ("duration", act.duration.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        println!(
            "       chaos run {EXPERIMENT_FILE} {}",
            sets.iter().map(|(k, v)| format!("--set {k}={v}")).collect::<Vec<_>>().join(" ")
        );
        let exp = experiment::parse(EXPERIMENT_FILE, EXPERIMENT, &sets)
            .map_err(|d| Error::invalid(d.to_string()))?;
        let stem = format!("act{}-loss{}", n + 1, act.loss);
        let events = Events::new(Box::new(
            crate::safe_fs::create_replacing(&out.join(format!("{stem}-events.jsonl")))
                .map_err(|e| Error::invalid(format!("writing to {}: {e}", out.display())))?,
        ));
        let options = Options {
            dry_run: false,
            capabilities: None,
            report: Some(out.join(format!("{stem}-report.json"))),
            junit: Some(out.join(format!("{stem}-junit.xml"))),
            metrics_addr: None,
            live,
            ends_by: None,
        };
        let (_, report) = execute(&exp, &options, &events, &signals)?;
        println!();
        let interrupted = report.abort.as_ref().is_some_and(|a| a.cause == "signal");
        results.push((act, report));
        if interrupted {
            break;
        }
    }
    println!("verdicts:");
    let mut interrupted = false;
    for (act, r) in &results {
        let stopped = r.abort.as_ref().is_some_and(|a| a.cause == "signal");
        let note = if stopped {
            "  (interrupted)".to_owned()
        } else if r.verdict == act.expect.label() {
            String::new()
        } else {
            format!("  (expected {}: loss is random, try again)", act.expect.label())
        };
        let speed = r
            .abort
            .as_ref()
            .and_then(|a| a.inert_after_decision_us.map(|us| (a, us)))
            .map(|(a, us)| {
                format!(
                    "; fault inert {:.2} ms after the abort decision, detached after {:.2} ms",
                    us as f64 / 1000.0,
                    a.detached_after_decision_us.unwrap_or(us) as f64 / 1000.0
                )
            })
            .unwrap_or_default();
        interrupted |= stopped;
        println!("  {:>3}% loss: {} (exit {}){speed}{note}", act.loss, r.verdict.to_uppercase(), r.exit_code);
    }
    println!("reports (JSON, JUnit XML, event lines): {}", out.display());
    let container = sb.container.as_ref().map(|c| c.label());
    drop(sb);
    match container {
        Some(c) => println!("sandbox removed: namespaces, veth, {c} and its image are gone."),
        None => println!("sandbox removed: namespaces, veth, cgroup and service are gone."),
    }
    Ok(if interrupted { ExitCode::Aborted } else { ExitCode::Ok })
}

/// The reports directory the user named, emptied of a previous demo's
/// files (removing a symlink removes the link, not what it points to; the
/// files are then created by [`crate::safe_fs`]).
fn prepare(out: &std::path::Path) -> Result<()> {
    fs::create_dir_all(out).map_err(|e| Error::invalid(format!("creating {}: {e}", out.display())))?;
    for e in fs::read_dir(out).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("act") {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Where reports go by default: a new directory `chaos-demo-XXXXXX` in the
/// temporary directory, made by mkdtemp (mode 0700), so that no other user
/// can have made it, or planted a symlink in it, first. It is left for the
/// user to read; the demo prints where it is.
pub fn default_out() -> Result<PathBuf> {
    let tmp = std::env::temp_dir();
    crate::safe_fs::private_dir(&tmp, "chaos-demo")
        .map_err(|e| Error::environment(format!("cannot create a directory in {}: {e}", tmp.display())))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_shipped_experiment_takes_the_demos_variables() {
        for act in ACTS {
            let sets: Vec<(String, String)> = [
                ("target", "/chaos-demo-1"),
                ("url", "http://10.213.0.1:8080/health"),
                ("probe-netns", "chaos-demo-1-client"),
                ("duration", act.duration),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .chain([("loss".to_owned(), act.loss.to_string())])
            .collect();
            let exp = experiment::parse(EXPERIMENT_FILE, EXPERIMENT, &sets).unwrap_or_else(|d| panic!("{d}"));
            assert_eq!(exp.hypothesis.probes[0].netns.as_deref(), Some("chaos-demo-1-client"));
            assert!(exp.method_length() <= Duration::from_secs(30));
        }
    }
}
