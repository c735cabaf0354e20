//! Attaching programs, and detaching them, with every object that can
//! outlive the process recorded in the state file first.

pub mod cgroup;
pub mod fmod_ret;
pub mod ifb;
pub mod netns;
pub mod qdisc;
mod rtnl;
pub mod sock_diag;
pub mod tc;
