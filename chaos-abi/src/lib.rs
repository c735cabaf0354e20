//! The map ABI between chaos's eBPF programs and its loader.
//!
//! Every type that crosses the user/kernel boundary is defined here, once,
//! `#[repr(C)]` with explicit padding and without `bool` or `enum` fields (a
//! byte the kernel hands back may hold any value; a Rust `bool` or `enum`
//! may not). Sizes are asserted at compile time so that a layout change is
//! a build error on both sides, not a silent mismatch.
//!
//! Map names are constants here too: the eBPF side names its statics after
//! them and the loader looks them up by the same constant.
#![no_std]

pub mod cgroup;
pub mod clock;
pub mod conn;
pub mod dns;
pub mod io;
pub mod net;

/// Implement `aya::Pod` for ABI types when building the loader.
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: `$t` is `#[repr(C)]`, `Copy`, has explicit padding
            // fields and no invalid bit patterns (integers only).
            unsafe impl aya::Pod for $t {}
        )*
    };
}
pub(crate) use pod;
