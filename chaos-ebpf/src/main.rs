//! The fault programs, one per file. Each is a thin entry point around a
//! `try_*` function; all of them fail open: on any lookup or parse error the
//! packet or call passes unchanged.
#![no_std]
#![no_main]
// io::fetch_add: one instruction of BPF inline assembly.
#![feature(asm_experimental_arch)]
// io::decide: an inlined closure (see there).
#![feature(stmt_expr_attributes)]

mod cgroup;
mod clock;
mod clock_enter_gettime;
mod clock_enter_gettimeofday;
mod clock_enter_time;
mod clock_exec;
mod clock_exit;
mod clock_fexit_gettime;
mod clock_fexit_gettimeofday;
mod clock_fexit_time;
mod clock_fmod_time;
mod clock_libc_enter;
mod clock_libc_enter_multi;
mod clock_libc_return;
mod clock_libc_return_multi;
mod conn;
mod conn_connect4;
mod conn_connect6;
mod conn_incoming;
mod conn_sendmsg4;
mod conn_sendmsg6;
mod dns;
mod dns_egress;
mod dns_msg;
mod dns_sockops;
mod io;
mod io_bounded_open;
mod io_bounded_rw;
mod io_fmod_open;
mod io_fmod_rw;
mod io_open;
mod io_rw;
mod maps;
mod net;
mod net_egress;
mod net_ingress;
mod net_receive;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: bpf_probe_write_user, bpf_override_return and the LSM hooks
// are gpl_only helpers (kernel/bpf/verifier.c, check_helper_call).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
