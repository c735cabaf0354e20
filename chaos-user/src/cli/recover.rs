//! `chaos recover`: remove what dead chaos processes left behind.

use clap::Args;

use crate::{
    error::{ExitCode, Result},
    recover, session, state,
};

/// Remove what chaos processes that died left behind.
///
/// Removes every object recorded by a chaos process that is no longer
/// running: netlink tc filters (kernels without TCX) and the root qdiscs
/// chaos installed for departure times; and the scratch cgroups
/// (`chaos-probe-<pid>-<random>`) of chaos processes killed while testing the
/// kernel's features. A clsact qdisc chaos added is left,
/// empty: deleting it would deactivate the device for an instant. Such leftovers are already inert — their rules' kernel-side
/// deadlines have passed or will — but they cost a map lookup per packet
/// until removed. Objects of running chaos processes, and anything chaos did
/// not create, are never touched. Every chaos start does this too.
///
/// Each object is reported as `removed`; `gone` (its network namespace or
/// device no longer exists, or it is not there any more); `left: <why>`
/// (what is there is not, or no longer provably, chaos's: it is left alone);
/// or `failed: <why>` (an error that may pass: the record is kept, retried by
/// the next recovery, and the exit code is 5). Only failures are retried.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Print one JSON object per action instead of text.
    #[arg(long)]
    pub json: bool,
}

impl RecoverArgs {
    pub fn run(self) -> Result<ExitCode> {
        session::require_root("chaos recover")?;
        let actions = recover::recover(&state::checked_state_dir()?)?;
        for a in &actions {
            if self.json {
                println!("{}", serde_json::to_string(a).expect("serializable"));
            } else {
                println!(
                    "{}: {} (left by pid {})",
                    a.object,
                    a.outcome,
                    a.owner_pid.map_or("?".into(), |p| p.to_string())
                );
            }
        }
        if actions.is_empty() && !self.json {
            println!("nothing to recover");
        }
        let failed = actions.iter().any(|a| a.outcome.starts_with("failed"));
        Ok(if failed { ExitCode::Internal } else { ExitCode::Ok })
    }
}
