//! Tiny programs that `chaos doctor` (and the attack planner, through the
//! same code) loads and attaches to learn what this kernel can do, one per
//! file. Each is inert: a probe must be harmless wherever it lands, even if
//! it fires before it is detached.
#![no_std]
#![no_main]

mod bpf_loop;
mod cgroup_ancestor;
mod cgroup_read;
mod cgroup_skb;
mod fentry;
mod fmod_ret;
mod kprobe;
mod kprobe_override;
mod lsm;
mod raw_tracepoint;
mod sched_cls;
mod sk_lookup;
mod sk_msg;
mod sock_addr;
mod sock_addr_retval;
mod tp_btf;
mod tracepoint;
mod uprobe;
mod write_user;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: bpf_probe_write_user and bpf_override_return are gpl_only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
