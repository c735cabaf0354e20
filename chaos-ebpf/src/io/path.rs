//! Does a file lie under one of a rule's prefixes? Answered from the
//! kernel's own objects, never from a path string: the dentry chain of the
//! file (`d_parent`, up to the root of its filesystem), then the mount
//! point it is mounted on, and so on up the mount tree — the walk
//! `prepend_path()` makes for `d_path()` (fs/d_path.c), except that it goes
//! on past a bind mount's root to the root of its filesystem, so a file
//! reached through a bind mount of a directory below the prefix matches
//! too. Each step compares the dentry's inode address with the rule's.
//!
//! Rust eBPF cannot emit CO-RE relocations, so every field is read with
//! `bpf_probe_read_kernel` at an offset the loader found in the running
//! kernel's BTF ([`IoOffsets`]). A failed read ends the walk: the call is
//! passed (fail open).
//!
//! The walk runs under `bpf_loop` (Linux 5.17) where the kernel has it
//! ([`walk`]): the verifier checks one step instead of every path through
//! up to [`MAX_DEPTH`] steps, each of which may go up a directory or
//! across a mount (written as a plain loop of that many steps, that
//! exceeds its one-million-instruction budget). Before 5.17, [`walk_bounded`]
//! is the same step written out [`MAX_DEPTH_BOUNDED`] times, which the
//! verifier follows to the end.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated::bpf_loop};
use chaos_abi::io::{IoOffsets, IoRule, MAX_DEPTH, MAX_DEPTH_BOUNDED, MAX_INODES};

/// The answer of a walk.
pub enum Walk {
    Match,
    NoMatch,
    /// The walk hit [`MAX_DEPTH`] or a read failed.
    Unresolved,
}

/// Read a pointer-sized kernel value at `base + offset`.
#[inline(always)]
pub fn read_u64(base: u64, offset: u32) -> Option<u64> {
    // SAFETY: bpf_probe_read_kernel copes with any address: a bad one makes
    // it fail (and zero the destination), never fault.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const u64) }.ok()
}

/// Read a 16-bit kernel value at `base + offset`.
#[inline(always)]
pub fn read_u16(base: u64, offset: u32) -> Option<u16> {
    // SAFETY: as in read_u64.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const u16) }.ok()
}

const RUNNING: u64 = 0;
const MATCH: u64 = 1;
const NO_MATCH: u64 = 2;
const UNRESOLVED: u64 = 3;

/// The walk's state, on the caller's stack, handed to each step.
#[repr(C)]
struct State {
    dentry: u64,
    /// The `struct mount` the current dentry is on.
    mount: u64,
    /// The rule's inodes; unused slots are 0, which no dentry's inode is
    /// compared against (a negative dentry has no inode and no children).
    inodes: [u64; MAX_INODES],
    dentry_inode: u64,
    dentry_parent: u64,
    mount_parent: u64,
    mount_mountpoint: u64,
    result: u64,
}

/// Walk from `dentry` (on the mount whose `struct vfsmount` is at `vfsmnt`)
/// up to the root of the mount tree, under `bpf_loop`.
#[inline(always)]
pub fn walk(dentry: u64, vfsmnt: u64, off: &IoOffsets, rule: &IoRule) -> Walk {
    let mut state = State::new(dentry, vfsmnt, off, rule);
    // SAFETY: `step` has the callback signature bpf_loop expects and only
    // touches the State it is given, which outlives the call.
    let done = unsafe { bpf_loop(MAX_DEPTH, step as *mut c_void, (&mut state as *mut State).cast(), 0) };
    if done < 0 {
        return Walk::Unresolved;
    }
    state.answer()
}

/// The same walk without `bpf_loop`, for kernels before 5.17: at most
/// [`MAX_DEPTH_BOUNDED`] steps, written out one after the other. Not a
/// bounded loop (Linux 5.3): 5.10's verifier refused that one ("infinite
/// loop detected", kernel/bpf/verifier.c, is_state_visited): a step's
/// values are unknown scalars, so it finds two iterations' states equal.
/// Each step costs the verifier time: under QEMU's emulation here an
/// io-error attack on 5.10 started in 14 s with 16 steps, 6 s with 4 (two
/// programs), so the bound stays small.
#[inline(always)]
pub fn walk_bounded(dentry: u64, vfsmnt: u64, off: &IoOffsets, rule: &IoRule) -> Walk {
    let mut state = State::new(dentry, vfsmnt, off, rule);
    macro_rules! steps {
        ($($n:literal)*) => {$(
            let _: u32 = $n;
            if advance(&mut state) != 0 {
                return state.answer();
            }
        )*};
    }
    steps!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
    const _: () = assert!(MAX_DEPTH_BOUNDED == 16, "one step per level above");
    state.answer()
}

impl State {
    #[inline(always)]
    fn new(dentry: u64, vfsmnt: u64, off: &IoOffsets, rule: &IoRule) -> Self {
        let mut state = State {
            dentry,
            // struct mount embeds the struct vfsmount a path points to
            // (fs/mount.h, real_mount()).
            mount: vfsmnt.wrapping_sub(u64::from(off.mount_mnt)),
            inodes: [0; MAX_INODES],
            dentry_inode: u64::from(off.dentry_inode),
            dentry_parent: u64::from(off.dentry_parent),
            mount_parent: u64::from(off.mount_parent),
            mount_mountpoint: u64::from(off.mount_mountpoint),
            result: RUNNING,
        };
        let mut i = 0;
        while i < MAX_INODES {
            if (i as u32) < rule.n_inodes {
                state.inodes[i] = rule.inodes[i];
            }
            i += 1;
        }
        state
    }

    #[inline(always)]
    fn answer(&self) -> Walk {
        match self.result {
            MATCH => Walk::Match,
            NO_MATCH => Walk::NoMatch,
            // UNRESOLVED, or RUNNING after the last step.
            _ => Walk::Unresolved,
        }
    }
}

#[inline(always)]
fn read(base: u64, offset: u64) -> Option<u64> {
    // SAFETY: as in read_u64.
    unsafe { bpf_probe_read_kernel((base.wrapping_add(offset)) as *const u64) }.ok()
}

/// bpf_loop's callback: one step.
#[inline(never)]
extern "C" fn step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the pointer `walk` gave it.
    advance(unsafe { &mut *ctx.cast::<State>() })
}

/// One step: 0 to go on, 1 to stop (bpf_loop's callback contract).
#[inline(always)]
fn advance(s: &mut State) -> i64 {
    let Some(inode) = read(s.dentry, s.dentry_inode) else { return stop(s, UNRESOLVED) };
    if inode != 0 {
        let mut i = 0;
        while i < MAX_INODES {
            if s.inodes[i] == inode {
                return stop(s, MATCH);
            }
            i += 1;
        }
    }
    let Some(parent) = read(s.dentry, s.dentry_parent) else { return stop(s, UNRESOLVED) };
    if parent != s.dentry {
        s.dentry = parent;
        return 0;
    }
    // The root of this filesystem (IS_ROOT: d_parent points to itself). Go
    // on at the mount point this mount covers, unless the mount is its own
    // parent: the root of a mount namespace, or an internal mount such as
    // pipefs or sockfs (vfs_create_mount(), fs/namespace.c).
    let Some(up) = read(s.mount, s.mount_parent) else { return stop(s, UNRESOLVED) };
    if up == s.mount {
        return stop(s, NO_MATCH);
    }
    let Some(point) = read(s.mount, s.mount_mountpoint) else { return stop(s, UNRESOLVED) };
    s.dentry = point;
    s.mount = up;
    0
}

#[inline(always)]
fn stop(s: &mut State, result: u64) -> i64 {
    s.result = result;
    1
}
