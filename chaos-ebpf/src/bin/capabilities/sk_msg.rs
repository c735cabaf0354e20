//! sk_msg and sock_ops, as dns-error answers DNS over TCP with them: a
//! sock_ops program that adds sockets to a sockhash, and an sk_msg program
//! on that sockhash calling every helper `dns_msg` calls (pulling,
//! copying and removing data, the current task's ancestor
//! cgroup, a redirect to a socket's ingress queue). Loaded and attached to a fresh
//! sockhash no socket is ever put in; the sock_ops program is loaded only.
//!
//! sk_msg came in Linux 4.17 (4f738adba30a), its ingress redirect in 4.20
//! (8934ce2fd081), bpf_msg_pop_data in 5.0 (7246d8ed4dcc); the ancestor
//! cgroup helper is offered to sk_msg programs only on later kernels,
//! which is what this probe finds out.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_INGRESS, sk_action},
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_msg_pop_data, bpf_msg_pull_data, bpf_probe_read_kernel,
    },
    macros::{map, sk_msg, sock_ops},
    maps::SockHash,
    programs::{SkMsgContext, SockOpsContext},
};

#[map]
static PROBE_SOCKS: SockHash<u32> = SockHash::with_max_entries(1, 0);

#[sock_ops]
pub fn probe_sock_ops(ctx: SockOpsContext) -> u32 {
    let mut key = 0u32;
    // SAFETY: the context the kernel handed us.
    let _ = PROBE_SOCKS.update(&mut key, unsafe { &mut *ctx.ops }, u64::from(BPF_ANY));
    1
}

#[sk_msg]
pub fn probe_sk_msg(ctx: SkMsgContext) -> u32 {
    // SAFETY: helper calls with plain arguments on our message.
    unsafe {
        if bpf_get_current_ancestor_cgroup_id(1) != u64::MAX && bpf_msg_pull_data(ctx.msg, 0, 1, 0) != 0 {
            let _ = bpf_msg_pop_data(ctx.msg, 0, 1, 0);
        }
        let mut byte = 0u8;
        let _ =
            bpf_probe_read_kernel((&raw mut byte).cast(), 1, (*ctx.msg).__bindgen_anon_1.data.cast_const());
    }
    let mut key = 0u32;
    let _ = PROBE_SOCKS.redirect_msg(&ctx, &mut key, u64::from(BPF_F_INGRESS));
    sk_action::SK_PASS
}
