//! chaos on Kubernetes (issue 17; the design is docs/kubernetes-plan.md).
//!
//! Two namespaced custom resources in the group [`resources::GROUP`]:
//! - [`resources::ChaosExperiment`], whose spec *is* an experiment file's
//!   document, so that `kubectl apply` and `chaos run` take the same file;
//! - [`resources::ChaosAttack`], one fault on the pods of one node until an
//!   absolute deadline; deleting it is the rollback.
//!
//! The node agent's decisions are a pure function ([`agent::reconcile`]),
//! and so are the runner's ([`runner::reconcile`], [`runner::pods`],
//! [`runner::lease`]), tested on recorded objects; the CRD manifests (deploy/crds.yaml) are
//! generated from the types here (`chaos-kube crds`).

pub mod agent;
pub mod resources;
pub mod runner;
pub mod submit;
