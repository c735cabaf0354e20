//! Network faults on what the target sends: a tc egress classifier on the
//! devices of the target's network namespace, attached through a TCX link
//! (fd-owned, kernel >= 6.6) or a netlink filter on older kernels. Loss
//! here; delay, rate, duplication, corruption and reordering in
//! [`crate::net::effects`], for packets that matched a rule only.
//!
//! The classifier runs for every packet of the device, most of them of
//! cgroups no rule targets; finding that out by cgroup (an ancestor id, a
//! hash lookup) cost ~65-110 ns per packet, more than the hook itself. So a
//! second program, [`net_tag`], on the target cgroup's egress hook — which
//! the kernel runs only for that subtree's sockets — tags the target's
//! packets with a bit of `skb->mark` ([`TAG_MARK`]), and the classifier
//! passes every untagged packet after one load and one test. Ordering: the
//! cgroup egress hook runs in `ip_finish_output` / `ip6_finish_output`
//! (net/ipv4/ip_output.c, net/ipv6/ip6_output.c), after routing and
//! netfilter's POSTROUTING, and the packet reaches the device's tc egress
//! hook later, in `__dev_queue_xmit` (net/core/dev.c, `sch_handle_egress` /
//! `tcx_run`) via `neigh_output`. For a tagged packet the classifier looks
//! the rule up by cgroup as before (cgroup-level targeting, deadline,
//! filters) and clears the tag.
//!
//! What the cgroup egress hook does not see is not tagged and so not
//! touched: it runs for full sockets whose packet it is (`sk == skb->sk`,
//! include/linux/bpf-cgroup.h, `BPF_CGROUP_RUN_PROG_INET_EGRESS`; a
//! SYN-ACK runs it with its listener, `sk_to_full_sk`), as
//! `bpf_skb_ancestor_cgroup_id` needed a full socket too; but packet
//! sockets (`AF_PACKET`: raw frames written to the device by `packet_snd`)
//! bypass IP output and its hook.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, TC_ACT_REDIRECT, TC_ACT_UNSPEC},
    helpers::generated::bpf_redirect,
    macros::{cgroup_skb, classifier},
    programs::{SkBuffContext, TcContext},
};
use chaos_abi::net::{DIR_EGRESS, TAG_MARK, tag_device_key};

use crate::{
    maps::NET_TAG_DEVICES,
    net::{
        Lookup,
        effects::{self, Verdict},
        lookup, lose, rule_of, tagged, untag,
    },
};

/// cgroup_skb return code: pass (include/uapi/linux/bpf.h,
/// `__cgroup_bpf_run_filter_skb`).
const CGROUP_SKB_PASS: i32 = 1;

#[classifier]
pub fn net_egress(ctx: TcContext) -> i32 {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // Every packet of a cgroup that no rule targets leaves here.
    // TC_ACT_UNSPEC == TCX_NEXT: let the next program in the chain run, as
    // if we were not there.
    if !tagged(skb) {
        return TC_ACT_UNSPEC;
    }
    match lookup(&ctx, DIR_EGRESS) {
        // A copy this program sent has no socket, so no rule: let it pass.
        // A tagged packet that is no copy and finds no rule here was tagged
        // by another chaos process's program, whose classifier (later in
        // the chain) needs the tag: leave it.
        Lookup::Miss => {
            effects::release_copy(skb);
            TC_ACT_UNSPEC
        }
        Lookup::Inert => {
            untag(skb);
            TC_ACT_UNSPEC
        }
        Lookup::Hit(rule, counters) => {
            // SAFETY: this CPU's counter slot (see `lookup`).
            let c = unsafe { &mut *counters };
            if lose(&rule, c, DIR_EGRESS) {
                return drop_silently();
            }
            // The tag stays on while the effects send copies, so that they
            // come back tagged (see `untag`).
            match effects::apply(skb, &rule, c) {
                Verdict::Pass => {
                    untag(skb);
                    TC_ACT_UNSPEC
                }
                Verdict::Drop => drop_silently(),
            }
        }
    }
}

/// The tag program: attached to the egress hook of each target cgroup
/// (fd-owned link), it runs for the packets of that subtree's sockets only,
/// and tags those that leave by a device carrying the classifier for the
/// rule they fall under (the same rule the classifier will find). Only
/// there: on any other device (loopback when the fault leaves it alone, a
/// device `--interface` did not name, a device of another namespace with
/// the same ifindex) nothing would clear the tag, and a mark changed by
/// chaos would reach the receive path (fwmark routing rules, netfilter,
/// `tcp_fwmark_accept`). cgroup_skb programs may write `mark`
/// (net/core/filter.c, `cg_skb_is_valid_access`), and the write stays on
/// the skb (`bpf_prog_run_save_cb` saves and restores `cb`, not `mark`). At
/// this point `skb->dev` is the output device (`ip_output` / `ip6_output`
/// set it before POSTROUTING). The lookups here cost only the target's
/// packets.
#[cgroup_skb]
pub fn net_tag(ctx: SkBuffContext) -> i32 {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    if let Some(rule) = rule_of(skb) {
        // SAFETY: ctx field accesses at their own width.
        unsafe {
            let ifindex = read_volatile(addr_of!((*skb).ifindex));
            if NET_TAG_DEVICES.get(&tag_device_key(rule.slot, ifindex)).is_some() {
                let mark = read_volatile(addr_of!((*skb).mark));
                write_volatile(addr_of_mut!((*skb).mark), mark | TAG_MARK);
            }
        }
    }
    CGROUP_SKB_PASS
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
