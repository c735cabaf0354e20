//! Just enough of a BTF reader to find struct field offsets in the running
//! kernel's type information (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF programs cannot carry CO-RE relocations, so programs that read
//! kernel structures (the I/O faults walk `struct file` -> `struct dentry`
//! -> `struct mount`) get the offsets from the loader, which computes them
//! here. aya parses BTF too, but keeps its type lookup private (aya-obj
//! 0.6's `Btf` exposes only `id_by_type_name_kind`; `types()`,
//! `type_by_id()` and the members of its struct records are crate-private),
//! so member offsets by path cannot come from it.
//!
//! The running kernel's BTF is read once per process ([`kernel_bytes`])
//! and each parser runs on it at most once ([`kernel`] for ours,
//! [`kernel_aya`] for aya's, which program loading needs): the doctor's
//! probes, the planner's and the injectors share both.
//!
//! The format is the kernel's (Documentation/bpf/btf.rst,
//! include/uapi/linux/btf.h): a header, a type section of variable-length
//! records numbered from 1, and a string section.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// How many times this process parsed the kernel's BTF (both parsers): a
/// debug log line says it, for measuring that it stays at most two.
static PARSES: AtomicUsize = AtomicUsize::new(0);

fn counted_parse(by: &str) {
    let n = PARSES.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::debug!("kernel BTF parsed by {by} (parse {n} of this process)");
}

/// The bytes of `/sys/kernel/btf/vmlinux`, read once. Kept for the
/// process's life (a few MB) so that the second parser needs no second
/// read.
pub fn kernel_bytes() -> Result<&'static [u8], String> {
    static BYTES: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    BYTES
        .get_or_init(|| std::fs::read(VMLINUX).map_err(|e| format!("cannot read {VMLINUX}: {e}")))
        .as_deref()
        .map_err(Clone::clone)
}

/// The running kernel's BTF, by our parser (struct member offsets), parsed
/// once per process.
pub fn kernel() -> Result<&'static Btf, BtfError> {
    static PARSED: OnceLock<Result<Btf, BtfError>> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            let bytes = kernel_bytes().map_err(BtfError::Malformed)?;
            counted_parse("chaos's reader");
            Btf::parse(bytes)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The running kernel's BTF, by aya's parser (what loading fentry, fexit,
/// LSM and tp_btf programs takes), parsed once per process.
pub fn kernel_aya() -> Result<&'static aya::Btf, String> {
    static PARSED: OnceLock<Result<aya::Btf, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            let bytes = kernel_bytes()?;
            counted_parse("aya");
            aya::Btf::parse(bytes, aya::Endianness::default()).map_err(|e| format!("{VMLINUX}: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Why an offset could not be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BtfError {
    /// The blob is not BTF, or is cut short or inconsistent.
    Malformed(String),
    NoStruct(String),
    NoMember {
        ty: String,
        member: String,
    },
    /// The member is a bitfield, or does not start on a byte.
    NotByteAligned {
        ty: String,
        member: String,
    },
    /// A path step goes through a member that is not a struct or union.
    NotAggregate {
        ty: String,
        member: String,
    },
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed BTF: {why}"),
            Self::NoStruct(name) => write!(f, "the kernel's BTF has no struct {name}"),
            Self::NoMember { ty, member } => write!(f, "the kernel's struct {ty} has no member {member}"),
            Self::NotByteAligned { ty, member } => write!(f, "{ty}.{member} is not byte-aligned"),
            Self::NotAggregate { ty, member } => write!(f, "{ty}.{member} is not a struct or union"),
        }
    }
}

impl std::error::Error for BtfError {}

#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    ty: u32,
    /// Offset in bits from the start of the aggregate.
    bit_offset: u32,
    bitfield: bool,
}

#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    name_off: u32,
    /// PTR, TYPEDEF, CONST, ...: the type referred to.
    ty: u32,
    members: Vec<Member>,
}

/// Parsed BTF: types by id, and struct/union ids by name.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, Vec<u32>>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    /// Parse a BTF blob in this machine's byte order.
    pub fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        let bad = |why: &str| BtfError::Malformed(why.to_owned());
        let magic = u16_at(bytes, 0).ok_or_else(|| bad("shorter than its header"))?;
        if magic != MAGIC {
            return Err(if magic == MAGIC.swap_bytes() {
                bad("the blob is in the other byte order")
            } else {
                bad(&format!("bad magic {magic:#x}"))
            });
        }
        let hdr_len = u32_at(bytes, 4).ok_or_else(|| bad("short header"))? as usize;
        let field = |at| u32_at(bytes, at).map(|v| v as usize).ok_or_else(|| bad("short header"));
        let (type_off, type_len, str_off, str_len) = (field(8)?, field(12)?, field(16)?, field(20)?);
        let section = |off: usize, len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some(start..start.checked_add(len)?))
                .and_then(|r| bytes.get(r))
                .ok_or_else(|| bad(&format!("{what} section out of bounds")))
        };
        let type_sec = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?.to_vec();

        // Type id 0 is void.
        let mut types = vec![Type { kind: 0, name_off: 0, ty: 0, members: Vec::new() }];
        let mut at = 0;
        while at < type_sec.len() {
            let word = |i: usize| u32_at(type_sec, at + 4 * i).ok_or_else(|| bad("type record cut short"));
            let (name_off, info, size_or_type) = (word(0)?, word(1)?, word(2)?);
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            at += 12;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = |j: usize| {
                            u32_at(type_sec, at + 12 * i + 4 * j).ok_or_else(|| bad("member cut short"))
                        };
                        let (m_name, m_type, m_off) = (m(0)?, m(1)?, m(2)?);
                        // With kind_flag, the offset word is
                        // bitfield_size << 24 | bit_offset.
                        let (bit_offset, bitfield) =
                            if kind_flag { (m_off & 0xff_ffff, m_off >> 24 != 0) } else { (m_off, false) };
                        members.push(Member { name_off: m_name, ty: m_type, bit_offset, bitfield });
                    }
                    12 * vlen
                }
                KIND_ENUM => 8 * vlen,
                KIND_ENUM64 | KIND_DATASEC => 12 * vlen,
                KIND_FUNC_PROTO => 8 * vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                other => return Err(bad(&format!("unknown type kind {other} (type {})", types.len()))),
            };
            at += extra;
            if at > type_sec.len() {
                return Err(bad("type section cut short"));
            }
            types.push(Type { kind, name_off, ty: size_or_type, members });
        }

        let mut btf = Self { types, strings, by_name: HashMap::new() };
        for (id, t) in btf.types.iter().enumerate() {
            if matches!(t.kind, KIND_STRUCT | KIND_UNION) && t.name_off != 0 {
                let name = btf.string(t.name_off).to_owned();
                btf.by_name.entry(name).or_default().push(id as u32);
            }
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// The id of the function `name` (a FUNC record: what a tracing
    /// program's `attach_btf_id` names). A linear scan: used once per probe.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == KIND_FUNC && t.name_off != 0 && self.string(t.name_off) == name)
            .map(|id| id as u32)
    }

    /// Follow typedefs and qualifiers to the id of the type they name.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = t.ty,
                _ => return Some(id),
            }
        }
        None
    }

    /// The struct or union `id` names, through typedefs and qualifiers.
    fn aggregate(&self, id: u32) -> Option<u32> {
        let id = self.resolve(id)?;
        matches!(self.types[id as usize].kind, KIND_STRUCT | KIND_UNION).then_some(id)
    }

    /// The struct named `name` (the first one with members, if the kernel
    /// has several of that name).
    fn find_struct(&self, name: &str) -> Result<u32, BtfError> {
        self.by_name
            .get(name)
            .and_then(|ids| {
                let is_struct = |id: &&u32| self.types[**id as usize].kind == KIND_STRUCT;
                let ids: Vec<&u32> = ids.iter().filter(is_struct).collect();
                ids.iter().find(|id| !self.types[***id as usize].members.is_empty()).or(ids.first()).copied()
            })
            .copied()
            .ok_or_else(|| BtfError::NoStruct(name.to_owned()))
    }

    /// Find `member` in the aggregate `id`, also inside its anonymous struct
    /// and union members (C11 anonymous members, e.g. `struct file`'s
    /// `f_path` sits in an anonymous union since Linux 6.12). Returns the
    /// bit offset and the member's type.
    fn find_member(&self, id: u32, member: &str) -> Option<(u32, bool, u32)> {
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            if m.name_off != 0 && self.string(m.name_off) == member {
                return Some((m.bit_offset, m.bitfield, m.ty));
            }
        }
        for m in t.members.iter().filter(|m| m.name_off == 0) {
            let Some(inner_id) = self.aggregate(m.ty) else { continue };
            if let Some((off, bitfield, ty)) = self.find_member(inner_id, member) {
                return Some((m.bit_offset + off, bitfield, ty));
            }
        }
        None
    }

    /// Byte offset of `path` (`member` or `member.member...`) in `struct
    /// ty`, e.g. `offset_of("file", "f_path.dentry")`.
    pub fn offset_of(&self, ty: &str, path: &str) -> Result<u32, BtfError> {
        let mut id = self.find_struct(ty)?;
        let mut bits = 0u32;
        let mut owner = ty.to_owned();
        let steps: Vec<&str> = path.split('.').collect();
        for (i, step) in steps.iter().enumerate() {
            let (off, bitfield, member_ty) = self
                .find_member(id, step)
                .ok_or_else(|| BtfError::NoMember { ty: owner.clone(), member: (*step).to_owned() })?;
            if bitfield || off % 8 != 0 {
                return Err(BtfError::NotByteAligned { ty: owner, member: (*step).to_owned() });
            }
            bits += off;
            if i + 1 < steps.len() {
                match self.aggregate(member_ty) {
                    Some(inner) => {
                        id = inner;
                        owner = format!("{owner}.{step}");
                    }
                    None => return Err(BtfError::NotAggregate { ty: owner, member: (*step).to_owned() }),
                }
            }
        }
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF blobs for the tests.
    #[derive(Default)]
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Self { strings: vec![0], next_id: 1, ..Default::default() }
        }

        fn name(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn record(&mut self, name: &str, kind: u32, kind_flag: bool, vlen: u32, size_or_type: u32) -> u32 {
            let name = self.name(name);
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
            for w in [name, info, size_or_type] {
                self.types.extend_from_slice(&w.to_ne_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, bytes: u32) -> u32 {
            let id = self.record(name, KIND_INT, false, 0, bytes);
            self.types.extend_from_slice(&(bytes * 8).to_ne_bytes());
            id
        }

        fn ptr(&mut self, to: u32) -> u32 {
            self.record("", KIND_PTR, false, 0, to)
        }

        fn qualified(&mut self, kind: u32, name: &str, to: u32) -> u32 {
            self.record(name, kind, false, 0, to)
        }

        /// `members`: (name, type, bit offset, bitfield size).
        fn aggregate(&mut self, kind: u32, name: &str, size: u32, members: &[(&str, u32, u32, u32)]) -> u32 {
            let kind_flag = members.iter().any(|m| m.3 != 0);
            let id = self.record(name, kind, kind_flag, members.len() as u32, size);
            for (m_name, ty, bits, bitfield) in members {
                let n = self.name(m_name);
                let off = if kind_flag { (bitfield << 24) | bits } else { *bits };
                for w in [n, *ty, off] {
                    self.types.extend_from_slice(&w.to_ne_bytes());
                }
            }
            id
        }

        fn enumeration(&mut self, name: &str, values: &[(&str, i32)]) -> u32 {
            let id = self.record(name, KIND_ENUM, false, values.len() as u32, 4);
            for (n, v) in values {
                let n = self.name(n);
                self.types.extend_from_slice(&n.to_ne_bytes());
                self.types.extend_from_slice(&v.to_ne_bytes());
            }
            id
        }

        fn func_proto(&mut self, ret: u32, params: &[u32]) -> u32 {
            let id = self.record("", KIND_FUNC_PROTO, false, params.len() as u32, ret);
            for p in params {
                self.types.extend_from_slice(&0u32.to_ne_bytes());
                self.types.extend_from_slice(&p.to_ne_bytes());
            }
            id
        }

        fn finish(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_ne_bytes());
            out.push(1); // version
            out.push(0); // flags
            let hdr_len = 24u32;
            let tl = self.types.len() as u32;
            let sl = self.strings.len() as u32;
            for w in [hdr_len, 0, tl, tl, sl] {
                out.extend_from_slice(&w.to_ne_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A miniature of the kernel's types as of 6.12: `f_path` in an
    /// anonymous union, a const-qualified member, a typedef, a bitfield,
    /// other kinds in between, and a forward declaration of a name that is
    /// also defined.
    fn kernel_like() -> Vec<u8> {
        let mut b = Builder::new();
        let u64_ = b.int("long long unsigned int", 8);
        let u32_ = b.int("unsigned int", 4);
        let u16_ = b.int("short unsigned int", 2);
        let _e = b.enumeration("rw_hint", &[("WRITE_LIFE_NOT_SET", 0), ("WRITE_LIFE_NONE", 1)]);
        let umode = b.qualified(KIND_TYPEDEF, "umode_t", u16_);
        let fwd = b.record("dentry", KIND_FWD, false, 0, 0);
        let dentry_fwd_ptr = b.ptr(fwd);
        let _proto = b.func_proto(u32_, &[u64_, dentry_fwd_ptr]);
        let path = b.aggregate(
            KIND_STRUCT,
            "path",
            16,
            &[("mnt", dentry_fwd_ptr, 0, 0), ("dentry", dentry_fwd_ptr, 64, 0)],
        );
        let const_path = b.qualified(KIND_CONST, "", path);
        let anon_union =
            b.aggregate(KIND_UNION, "", 16, &[("f_path", const_path, 0, 0), ("__f_path", path, 0, 0)]);
        let inner_anon = b.aggregate(KIND_STRUCT, "", 8, &[("f_flags", u32_, 0, 0), ("f_mode", u32_, 32, 0)]);
        b.aggregate(
            KIND_STRUCT,
            "file",
            64,
            &[
                ("f_lock", u32_, 0, 0),
                ("f_inode", dentry_fwd_ptr, 64, 0),
                ("", inner_anon, 128, 0),
                ("", anon_union, 192, 0),
                ("f_pos", u64_, 320, 0),
            ],
        );
        b.aggregate(
            KIND_STRUCT,
            "inode",
            24,
            &[
                ("i_mode", umode, 0, 0),
                ("i_opflags", u16_, 16, 0),
                ("i_flags", u32_, 32, 3),
                ("i_ino", u64_, 64, 0),
            ],
        );
        b.finish()
    }

    #[test]
    fn finds_members_through_anonymous_unions_and_structs() {
        let btf = Btf::parse(&kernel_like()).unwrap();
        assert_eq!(btf.offset_of("file", "f_inode"), Ok(8));
        assert_eq!(btf.offset_of("file", "f_mode"), Ok(20));
        assert_eq!(btf.offset_of("file", "f_path"), Ok(24));
        assert_eq!(btf.offset_of("file", "f_path.dentry"), Ok(32));
        assert_eq!(btf.offset_of("file", "__f_path.mnt"), Ok(24));
        assert_eq!(btf.offset_of("file", "f_pos"), Ok(40));
        assert_eq!(btf.offset_of("inode", "i_mode"), Ok(0));
        assert_eq!(btf.offset_of("inode", "i_ino"), Ok(8));
    }

    #[test]
    fn refuses_what_it_cannot_answer() {
        let btf = Btf::parse(&kernel_like()).unwrap();
        assert_eq!(btf.offset_of("mount", "mnt"), Err(BtfError::NoStruct("mount".into())));
        assert!(matches!(btf.offset_of("file", "f_nope"), Err(BtfError::NoMember { .. })));
        assert!(matches!(btf.offset_of("inode", "i_flags"), Err(BtfError::NotByteAligned { .. })));
        assert!(matches!(btf.offset_of("file", "f_pos.x"), Err(BtfError::NotAggregate { .. })));
        // A struct is found by name, never a forward declaration or union.
        assert!(matches!(btf.offset_of("dentry", "d_parent"), Err(BtfError::NoStruct(_))));
    }

    #[test]
    fn rejects_malformed_blobs() {
        let good = kernel_like();
        assert!(Btf::parse(&good[..10]).is_err());
        let mut bad_magic = good.clone();
        bad_magic[0] ^= 0xff;
        assert!(matches!(Btf::parse(&bad_magic), Err(BtfError::Malformed(_))));
        // Cut in the middle of the type section: header says more.
        let mut cut = good.clone();
        cut.truncate(good.len() - 40);
        assert!(Btf::parse(&cut).is_err());
        // Unknown kind.
        let mut b = Builder::new();
        b.record("x", 31, false, 0, 0);
        assert!(matches!(Btf::parse(&b.finish()), Err(BtfError::Malformed(_))));
    }

    /// Both parsers run at most once per process, however often (and from
    /// however many threads) the kernel's BTF is asked for.
    #[test]
    fn kernel_btf_is_parsed_once_and_shared() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let ours = kernel().expect("kernel BTF") as *const Btf as usize;
                    let theirs = kernel_aya().expect("kernel BTF") as *const aya::Btf as usize;
                    (ours, theirs)
                })
            })
            .collect();
        let seen: Vec<(usize, usize)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "different handles: {seen:?}");
        // Other tests of this process may have parsed too, never more.
        assert_eq!(PARSES.load(Ordering::Relaxed), 2);
    }

    /// The host's own kernel: the offsets the I/O faults use exist and are
    /// plausible. (Exact values differ between kernels; `struct path` has
    /// been { mnt, dentry } since 2.6.)
    #[test]
    fn host_vmlinux_has_the_io_fault_offsets() {
        // Every kernel this project builds and tests on has BTF (the host
        // and each kernel of the matrix): its absence is a failure here,
        // never a test that quietly passes.
        let btf = kernel().unwrap_or_else(|e| panic!("kernel BTF at /sys/kernel/btf/vmlinux: {e}"));
        assert_eq!(btf.offset_of("path", "mnt"), Ok(0));
        assert_eq!(btf.offset_of("path", "dentry"), Ok(8));
        let f_path = btf.offset_of("file", "f_path").unwrap();
        assert_eq!(btf.offset_of("file", "f_path.dentry"), Ok(f_path + 8));
        for (ty, member) in [
            ("file", "f_inode"),
            ("dentry", "d_parent"),
            ("dentry", "d_inode"),
            ("inode", "i_mode"),
            ("mount", "mnt"),
            ("mount", "mnt_parent"),
            ("mount", "mnt_mountpoint"),
            ("vfsmount", "mnt_root"),
            ("super_block", "s_dev"),
        ] {
            let off = btf.offset_of(ty, member).unwrap_or_else(|e| panic!("{ty}.{member}: {e}"));
            assert!(off < 4096, "{ty}.{member} at {off}");
        }
        // struct mount { struct hlist_node mnt_hash; struct mount *mnt_parent; ... }
        assert_eq!(btf.offset_of("mount", "mnt_parent"), Ok(16));
        assert_eq!(btf.offset_of("inode", "i_mode"), Ok(0));
    }
}
