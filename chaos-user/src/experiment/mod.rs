//! Experiments: declarative, repeatable runs with a hypothesis.
//!
//! A file (YAML) names targets, a steady-state hypothesis (probes with
//! tolerances), a method (attacks in sequence or in parallel, each after an
//! optional delay), abort conditions and a maximum duration; variables with
//! defaults make one file serve many teams. The format is documented in
//! experiments/README.md and in `chaos run --help`.
//!
//! `parse` turns a file into a validated [`Experiment`] (pure: no access to
//! the machine) with every problem at once; `run` resolves, plans, checks
//! the steady state, injects, watches and reports.

mod describe;
pub mod diag;
pub mod model;
pub mod parse;
pub mod run;
pub mod vars;
mod view;
pub mod yaml;

#[cfg(test)]
mod tests;

pub use self::{
    model::{AttackSpec, Experiment, Hypothesis, Pick, Selector, Step, TargetSpec},
    parse::{load, parse, step_fault},
    run::{Options, Outcome, Verdict, run},
};
