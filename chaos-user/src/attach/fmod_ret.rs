//! fmod_ret (BPF_MODIFY_RETURN) programs: loaded and attached by chaos
//! itself, because aya 0.16 cannot (aya/src/programs/mod.rs: "BPF_MODIFY_RETURN
//! (not supported yet in Aya)"; aya-obj 0.6 parses no `fmod_ret/` section).
//!
//! Such a program is in the fault object under an `fexit/FUNCTION` section,
//! which aya-obj parses (see chaos-ebpf/src/io_fmod_open.rs). Loading it
//! takes the steps aya's `EbpfLoader::load` takes for every program, on a
//! second parse of the same object, against the maps of the running `Ebpf`
//! — so it reads the very rule tables the other programs of its family
//! read:
//! 1. CO-RE relocations against the kernel's BTF (aya-obj);
//! 2. every map reference pointed at the fd of the map of that name in the
//!    `Ebpf` (aya-obj's `relocate_maps`);
//! 3. subprograms linked in (aya-obj's `relocate_calls`);
//! 4. the object's own BTF, sanitized as aya sanitizes it, loaded
//!    (BPF_BTF_LOAD): a program with subprograms needs it, with its
//!    func_info, or the verifier says "missing btf func_info"
//!    (kernel/bpf/verifier.c, check_btf_info_early);
//! 5. BPF_PROG_LOAD as BPF_PROG_TYPE_TRACING with expected attach type
//!    BPF_MODIFY_RETURN and the function's BTF id.
//!
//! Attaching is BPF_RAW_TRACEPOINT_OPEN without a name, which links a
//! tracing program to the function it was loaded for and returns the link
//! as an fd (kernel/bpf/syscall.c, bpf_raw_tp_link_attach): the link goes
//! with the last fd, so with this process, like aya's fd-owned links.
//!
//! aya-obj and its generated `bpf_attr` are the only parts used: the two
//! bpf(2) commands are issued here because aya keeps its own private.

use std::{
    collections::HashSet,
    ffi::CString,
    mem,
    os::fd::{AsFd as _, AsRawFd, FromRawFd, OwnedFd},
};

use aya::{
    Ebpf,
    maps::{Map, MapData, MapFd},
};
use aya_obj::{
    Object,
    btf::BtfFeature,
    generated::{
        bpf_attach_type::BPF_MODIFY_RETURN, bpf_attr, bpf_cmd, bpf_func_info, bpf_insn,
        bpf_prog_type::BPF_PROG_TYPE_TRACING,
    },
};

/// A loaded fmod_ret program, attached: both fds close on drop, which
/// detaches it.
pub struct FmodRetLink {
    _link: OwnedFd,
    _prog: OwnedFd,
}

/// Load `program` from `object` (the bytes `ebpf` was loaded from) as
/// fmod_ret on the kernel function `function`, and attach it.
pub fn attach(ebpf: &Ebpf, object: &[u8], program: &str, function: &str) -> Result<FmodRetLink, String> {
    let code = relocated(ebpf, object, program)?;
    let btf = crate::btf::kernel().map_err(|e| format!("no usable kernel BTF: {e}"))?;
    let id = btf.func_id(function).ok_or_else(|| format!("{function} is not in the kernel's BTF"))?;
    let prog = load(&code.insns, id, program, code.btf.as_ref().map(|btf| (btf, &code.func_info[..])))?;
    let link = link(&prog)?;
    Ok(FmodRetLink { _link: link, _prog: prog })
}

/// A program ready to load: its instructions, and its BTF with the
/// func_info records of its functions, when the object has BTF.
struct Code {
    insns: Vec<bpf_insn>,
    btf: Option<OwnedFd>,
    func_info: Vec<bpf_func_info>,
    /// The map fds the instructions name: open until the program is loaded
    /// (it then holds the maps itself).
    _maps: Vec<(String, MapFd)>,
}

/// `program`'s instructions, relocated as aya relocates the programs it
/// loads, against the maps of `ebpf`.
fn relocated(ebpf: &Ebpf, object: &[u8], program: &str) -> Result<Code, String> {
    let mut obj = Object::parse(object).map_err(|e| format!("parsing the fault object: {e}"))?;
    // The BTF kinds this kernel does not know (FLOAT 5.13, DECL_TAG 5.16,
    // TYPE_TAG 5.17, ENUM64 6.0...) are rewritten into ones it does, as
    // aya does for the programs it loads: each kind probed by loading a
    // tiny BTF blob, once per kind.
    let btf = match obj
        .fixup_and_sanitize_btf(|| {
            Some(|f: BtfFeature| aya::sys::is_btf_feature_supported(f).unwrap_or(false))
        })
        .map_err(|e| format!("preparing the object's BTF: {e}"))?
    {
        Some(btf) => Some(load_btf(&btf.to_bytes())?),
        None => None,
    };
    if obj.btf_ext.is_some() {
        let kernel = crate::btf::kernel_aya()?;
        obj.relocate_btf(kernel).map_err(|e| format!("CO-RE relocations of {program}: {e}"))?;
    }
    // Fresh fds of the running maps, by name: the same map objects, not
    // copies (MapInfo::fd opens the map by its id).
    let mut fds: Vec<(String, MapFd)> = Vec::with_capacity(obj.maps.len());
    for name in obj.maps.keys() {
        let map = ebpf.map(name).ok_or_else(|| format!("map {name} is not in the loaded object"))?;
        let fd = data(map).info().and_then(|i| i.fd()).map_err(|e| format!("opening map {name}: {e}"))?;
        fds.push((name.clone(), fd));
    }
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    let maps: Vec<(&str, i32, aya_obj::Map)> = fds
        .iter()
        .map(|(name, fd)| (name.as_str(), fd.as_fd().as_raw_fd(), obj.maps[name].clone()))
        .collect();
    obj.relocate_maps(maps.iter().map(|(n, fd, m)| (*n, *fd, m)), &text_sections)
        .map_err(|e| format!("map relocations: {e}"))?;
    obj.relocate_calls(&text_sections).map_err(|e| format!("linking {program}: {e}"))?;
    let prog =
        obj.programs.get(program).ok_or_else(|| format!("no program {program} in the fault object"))?;
    let function = obj
        .functions
        .get(&prog.function_key())
        .ok_or_else(|| format!("no code for program {program} in the fault object"))?;
    Ok(Code {
        insns: function.instructions.clone(),
        func_info: function.func_info.func_info.clone(),
        btf,
        _maps: fds,
    })
}

/// BPF_BTF_LOAD: the object's BTF, for its programs' func_info.
fn load_btf(bytes: &[u8]) -> Result<OwnedFd, String> {
    // SAFETY: as in `load`, for the BPF_BTF_LOAD member.
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    // SAFETY: writing the BPF_BTF_LOAD member of the union.
    let load = unsafe { &mut attr.__bindgen_anon_7 };
    load.btf = bytes.as_ptr() as u64;
    load.btf_size = bytes.len() as u32;
    bpf(bpf_cmd::BPF_BTF_LOAD, &mut attr).map_err(|e| format!("loading the object's BTF: {e}"))
}

/// The map behind `map`: aya 0.16 has no accessor for it, and every
/// variant holds one.
fn data(map: &Map) -> &MapData {
    macro_rules! each {
        ($($variant:ident),*) => {
            match map {
                $(Map::$variant(data) => data,)*
            }
        };
    }
    each!(
        Array,
        ArrayOfMaps,
        BloomFilter,
        CgroupArray,
        CgroupStorage,
        CgrpStorage,
        CpuMap,
        DevMap,
        DevMapHash,
        HashMap,
        HashOfMaps,
        InodeStorage,
        LpmTrie,
        LruHashMap,
        PerCpuArray,
        PerCpuCgroupStorage,
        PerCpuHashMap,
        PerCpuLruHashMap,
        PerfEventArray,
        ProgramArray,
        Queue,
        ReusePortSockArray,
        RingBuf,
        SockHash,
        SockMap,
        SkStorage,
        Stack,
        StackTraceMap,
        Unsupported,
        XskMap
    )
}

/// BPF_PROG_LOAD `insns` as fmod_ret for the kernel function of BTF id
/// `btf_id`; `name` is what bpftool and /proc show; `btf`, the program's
/// BTF and the func_info of its functions. The verifier's log is asked for
/// only when a first load fails.
pub fn load(
    insns: &[bpf_insn],
    btf_id: u32,
    name: &str,
    btf: Option<(&OwnedFd, &[bpf_func_info])>,
) -> Result<OwnedFd, String> {
    let license = CString::new("GPL").expect("no NUL");
    let attempt = |log: Option<&mut Vec<u8>>| {
        // SAFETY: bpf_attr is a plain C union of integers; all zeroes is
        // the kernel's "unset" for every field it does not use (it checks
        // that the bytes past those it knows are zero).
        let mut attr: bpf_attr = unsafe { mem::zeroed() };
        // SAFETY: writing the BPF_PROG_LOAD member of the union.
        let load = unsafe { &mut attr.__bindgen_anon_3 };
        load.prog_type = BPF_PROG_TYPE_TRACING as u32;
        load.expected_attach_type = BPF_MODIFY_RETURN as u32;
        load.attach_btf_id = btf_id;
        load.insns = insns.as_ptr() as u64;
        load.insn_cnt = insns.len() as u32;
        load.license = license.as_ptr() as u64;
        if let Some((fd, func_info)) = btf {
            load.prog_btf_fd = fd.as_raw_fd() as u32;
            load.func_info = func_info.as_ptr() as u64;
            load.func_info_cnt = func_info.len() as u32;
            load.func_info_rec_size = mem::size_of::<bpf_func_info>() as u32;
        }
        // The kernel keeps 15 bytes of the name (BPF_OBJ_NAME_LEN).
        for (dst, src) in load.prog_name.iter_mut().zip(name.bytes().take(15)) {
            *dst = src as libc::c_char;
        }
        if let Some(log) = log {
            load.log_level = 1;
            load.log_buf = log.as_mut_ptr() as u64;
            load.log_size = log.len() as u32;
        }
        bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
    };
    attempt(None).or_else(|_| {
        let mut log = vec![0u8; 1 << 20];
        attempt(Some(&mut log)).map_err(|e| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            crate::ebpf::load_failure(&e, &String::from_utf8_lossy(&log[..end]))
        })
    })
}

/// Attach a loaded tracing program where it was loaded for; the link fd.
pub fn link(prog: &OwnedFd) -> Result<OwnedFd, String> {
    // SAFETY: as in `load`, for the BPF_RAW_TRACEPOINT_OPEN member.
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    attr.raw_tracepoint.prog_fd = prog.as_raw_fd() as u32;
    bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr).map_err(|e| format!("loaded, but attaching failed: {e}"))
}

/// bpf(2) for a command that returns a new fd.
fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid bpf_attr of the size passed; the pointers
    // in it (instructions, license, log) outlive the call.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, cmd as libc::c_int, attr as *mut bpf_attr, mem::size_of::<bpf_attr>())
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}
