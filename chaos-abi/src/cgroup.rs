//! How rules are keyed: by cgroup v2 id, matched against a packet's or a
//! task's ancestors so that a rule on a cgroup covers its whole subtree.

/// Deepest cgroup level (root = 0) a target may sit at. The eBPF side walks
/// ancestors with a bounded loop over this many levels, visiting only the
/// levels present in the [`LEVELS`] mask.
pub const MAX_LEVEL: u32 = 31;
