//! The node agent: what it decides is [`reconcile`], a pure function of
//! the attacks the API server lists for this node, the attacks this agent
//! process runs or has ended, and the time.

pub mod reconcile;

pub use self::reconcile::{Action, Local, reconcile};
