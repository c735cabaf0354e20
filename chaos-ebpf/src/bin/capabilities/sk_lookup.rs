//! sk_lookup (Linux 5.9, e9ddbb7707ff), attached to a throwaway network
//! namespace: what net-refuse's incoming refusals use. It passes every
//! lookup, and nothing runs in that namespace anyway.
use aya_ebpf::{bindings::sk_action, macros::sk_lookup, programs::SkLookupContext};

#[sk_lookup]
pub fn probe_sk_lookup(_ctx: SkLookupContext) -> u32 {
    sk_action::SK_PASS
}
