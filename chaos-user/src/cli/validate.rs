//! `chaos validate FILE...`: check experiment files without running them.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::{
    error::{ExitCode, Result},
    experiment::{self, vars::parse_set},
    units::format_duration,
};

/// Check experiment files: every problem at once, each with
/// file:line:column and what to write instead.
///
/// Validation is pure: targets are not resolved and nothing is probed or
/// injected, so it runs anywhere, unprivileged (e.g. in CI before
/// deploying). `chaos run --dry-run FILE` goes further on the machine
/// itself: it resolves targets and plans a mechanism for every attack.
/// Exit code 0 when every file is valid, 3 otherwise.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Experiment files.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Set a variable the files declare (repeatable), as `chaos run` would.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,

    /// One JSON object per problem on stdout
    /// (`{"file", "line", "column", "message", "hint"}`), for editors.
    #[arg(long)]
    pub json: bool,
}

impl ValidateArgs {
    pub fn run(self) -> Result<ExitCode> {
        let mut invalid = 0;
        for path in &self.files {
            let name = path.display().to_string();
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    invalid += 1;
                    if self.json {
                        println!(
                            "{}",
                            json!({ "file": name, "line": 0, "column": 0, "message": format!("cannot read: {e}") })
                        );
                    } else {
                        eprintln!("{name}: error: cannot read: {e}");
                    }
                    continue;
                }
            };
            match experiment::parse(&name, &text, &self.set) {
                Ok(exp) => {
                    if !self.json {
                        let attacks = exp.attacks().count();
                        let probes = exp.hypothesis.probes.len() + exp.abort.len();
                        println!(
                            "{name}: ok — `{}`: {} step{}, {attacks} attack{}, {probes} probe{}, method {}, max-duration {}",
                            exp.name,
                            exp.method.len(),
                            plural(exp.method.len()),
                            plural(attacks),
                            plural(probes),
                            format_duration(exp.method_length()),
                            format_duration(exp.max_duration),
                        );
                    }
                }
                Err(diags) => {
                    invalid += 1;
                    if self.json {
                        for d in &diags.list {
                            println!(
                                "{}",
                                json!({
                                    "file": name,
                                    "line": d.span.start.line,
                                    "column": d.span.start.col,
                                    "message": d.message,
                                    "hint": d.hint,
                                })
                            );
                        }
                    } else {
                        eprint!("{diags}");
                        eprintln!("{name}: {} problem{}\n", diags.len(), plural(diags.len()));
                    }
                }
            }
        }
        Ok(if invalid == 0 { ExitCode::Ok } else { ExitCode::Invalid })
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
