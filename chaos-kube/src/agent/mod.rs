//! The node agent (`chaos-kube agent`, a DaemonSet): it watches the
//! `ChaosAttack`s labelled for its node and runs them with chaos's own
//! runner. What it decides is [`reconcile`], a pure function of the
//! attacks listed, what this process runs or has ended, and the time;
//! [`run`] is the wiring to the API server.

pub mod events;
pub mod inject;
pub mod preflight;
pub mod reconcile;
pub mod run;
pub mod status;

pub use self::{
    reconcile::{Action, Local, reconcile},
    run::run,
};
