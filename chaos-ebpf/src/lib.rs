//! Empty library target: chaos-user has a build-dependency on this crate so
//! that cargo rebuilds the eBPF objects when it changes. The programs live in
//! the `chaos` and `probes` binaries.
#![no_std]
