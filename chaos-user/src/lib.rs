//! chaos: kernel-level fault injection for one cgroup at a time.
//!
//! The data flow is one-directional: flags or an experiment file are
//! validated ([`units`], [`faults`]), targets resolved ([`targets`]), a
//! mechanism chosen per fault from probed kernel capabilities
//! ([`capabilities`], [`attack::plan`]), rules written and programs attached
//! ([`injector`], [`attach`]), attacks run and stopped ([`controller`]), and
//! what happened reported ([`events`]). What could outlive the process is
//! recorded first ([`state`]) and removed by [`recover`].

pub mod ancestry;
pub mod attach;
pub mod attack;
pub mod btf;
pub mod capabilities;
pub mod cli;
pub mod controller;
pub mod controls;
pub mod counters;
pub mod demo;
pub mod disks;
pub mod ebpf;
pub mod error;
pub mod events;
pub mod experiment;
pub mod faults;
pub mod guardian;
pub mod injector;
pub mod metrics;
pub mod plan;
pub mod probes;
pub mod recover;
pub mod report;
pub mod runtime;
pub mod safe_fs;
pub mod session;
pub mod signals;
pub mod state;
pub mod targets;
pub mod timebase;
pub mod units;
