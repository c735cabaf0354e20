//! Network faults on what the target sends: a tc egress classifier on the
//! devices of the target's network namespace, attached through a TCX link
//! (fd-owned, kernel >= 6.6) or a netlink filter on older kernels. Loss
//! here; delay, rate, duplication, corruption and reordering in
//! [`crate::net::effects`], for packets that matched a rule only.

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, TC_ACT_REDIRECT, TC_ACT_UNSPEC},
    helpers::generated::bpf_redirect,
    macros::classifier,
    programs::TcContext,
};
use chaos_abi::net::DIR_EGRESS;

use crate::net::{
    Lookup,
    effects::{self, Verdict},
    lookup, lose,
};

#[classifier]
pub fn net_egress(ctx: TcContext) -> i32 {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    match lookup(&ctx, DIR_EGRESS) {
        // A copy this program sent has no socket, so no rule: let it pass.
        // TC_ACT_UNSPEC == TCX_NEXT: let the next program in the chain run,
        // as if we were not there.
        Lookup::Miss => {
            effects::release_copy(skb);
            TC_ACT_UNSPEC
        }
        Lookup::Inert => TC_ACT_UNSPEC,
        Lookup::Hit(rule, counters) => {
            // SAFETY: this CPU's counter slot (see `lookup`).
            let c = unsafe { &mut *counters };
            if lose(&rule, c, DIR_EGRESS) {
                return drop_silently();
            }
            match effects::apply(skb, &rule, c) {
                Verdict::Pass => TC_ACT_UNSPEC,
                Verdict::Drop => drop_silently(),
            }
        }
    }
}

/// Drop a packet so that the sending socket cannot tell, as on a real
/// network.
///
/// `TC_ACT_SHOT` (`TCX_DROP`) makes `__dev_queue_xmit` return
/// `NET_XMIT_DROP`, which the stack reports as ENOBUFS/congestion (`ping`
/// re-sends, TCP enters CWR), and `TC_ACT_STOLEN` is mapped to `TCX_NEXT` by
/// TCX (include/net/tcx.h, tcx_action_code). `TC_ACT_REDIRECT` is honoured
/// by both: `sch_handle_egress` (net/core/dev.c) ignores the result of
/// `skb_do_redirect` and returns `NET_XMIT_SUCCESS`, and `skb_do_redirect`
/// (net/core/filter.c) frees the skb when the target ifindex names no
/// device. Ifindex 0 never names one, so this is a drop the sender sees as a
/// successful transmit.
///
/// Called after any `bpf_clone_redirect` of the same run, so that the
/// redirect target it records is ours when the hook acts on it.
#[inline(always)]
fn drop_silently() -> i32 {
    // SAFETY: plain helper call; flags 0 is valid.
    unsafe { bpf_redirect(0, 0) };
    TC_ACT_REDIRECT
}
