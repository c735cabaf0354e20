//! The C library a running process maps, and where its `clock_gettime`
//! starts in the file: what a per-process uprobe is attached to.

use std::path::{Path, PathBuf};

/// One C library, as mapped by one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// A path the kernel resolves to the mapped file itself, even in
    /// another mount namespace or after the file was replaced on disk:
    /// `/proc/PID/map_files/START-END`.
    pub path: PathBuf,
    /// The path as the process sees it (for messages).
    pub shown: String,
    /// (device, inode) as /proc/PID/maps prints them: the file's identity.
    pub identity: (String, u64),
}

/// File names of C libraries whose `clock_gettime` serves the program's
/// clock reads: glibc's and musl's (musl's dynamic linker is its libc).
pub fn is_libc(name: &str) -> bool {
    name.starts_with("libc.so")
        || (name.starts_with("libc-") && name.ends_with(".so"))
        || name.starts_with("ld-musl-")
        || name.starts_with("libc.musl-")
}

/// The first C library mapping in `/proc/PID/maps`, if any.
pub fn mapped(pid: i32) -> Option<Mapped> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    parse_maps(pid, &maps)
}

fn parse_maps(pid: i32, maps: &str) -> Option<Mapped> {
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let mut fields = line.split_whitespace();
        let (Some(range), Some(_perms), Some(_offset), Some(dev), Some(inode)) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path: Vec<&str> = fields.collect();
        let Some(first) = path.first() else { continue };
        if !first.starts_with('/') || path.len() > 1 {
            // Anonymous, special ([vdso]) or " (deleted)": skip.
            continue;
        }
        let name = Path::new(first).file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !is_libc(name) {
            continue;
        }
        let Ok(inode) = inode.parse::<u64>() else { continue };
        return Some(Mapped {
            path: PathBuf::from(format!("/proc/{pid}/map_files/{range}")),
            shown: (*first).to_owned(),
            identity: (dev.to_owned(), inode),
        });
    }
    None
}

/// The largest file read as a C library (glibc's is about 2 MiB, musl's
/// under 1 MiB): a bigger one is refused rather than read whole.
pub const MAX_LIBRARY_BYTES: u64 = 64 << 20;

/// The file offset of the function `name` exported by the shared object at
/// `path` (at most [`MAX_LIBRARY_BYTES`]).
pub fn function_offset_in(path: &Path, name: &str) -> Result<u64, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("opening it: {e}"))?;
    let mut bytes = Vec::new();
    // take(): the size is not trusted from a stat that a growing file
    // could outrun.
    file.take(MAX_LIBRARY_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("reading it: {e}"))?;
    if bytes.len() as u64 > MAX_LIBRARY_BYTES {
        return Err(format!(
            "larger than {} MiB, more than any C library: not read",
            MAX_LIBRARY_BYTES >> 20
        ));
    }
    function_offset(&bytes[..], name)
}

/// The file offset of the function `name` exported by the 64-bit ELF
/// shared object `bytes` (its `.dynsym`), which is what a uprobe is
/// attached at. Parsed by the `object` crate, which checks every offset
/// and size against the data.
pub fn function_offset(bytes: &[u8], name: &str) -> Result<u64, String> {
    use object::{Object as _, ObjectSegment as _, ObjectSymbol as _, elf::STT_FUNC, read::elf::ElfFile64};
    let elf =
        ElfFile64::<object::Endianness>::parse(bytes).map_err(|e| format!("not a 64-bit ELF file ({e})"))?;
    if elf.elf_dynamic_symbol_table().is_empty() {
        return Err("no .dynsym section: not a shared library".to_owned());
    }
    // A function (not an IFUNC resolver, not an undefined import).
    let symbol = elf
        .dynamic_symbols()
        .find(|s| {
            s.is_definition()
                && s.elf_symbol().st_type() == STT_FUNC
                && s.name_bytes().is_ok_and(|n| n == name.as_bytes())
        })
        .ok_or_else(|| format!("no function {name} in its dynamic symbols"))?;
    let vaddr = symbol.address();
    // Virtual address to file offset, through the PT_LOAD segment holding
    // it (segments() yields the PT_LOAD ones).
    for segment in elf.segments() {
        let (offset, filesz) = segment.file_range();
        if let Some(delta) = vaddr.checked_sub(segment.address())
            && delta < filesz
        {
            return offset.checked_add(delta).ok_or_else(|| format!("{name}'s file offset overflows"));
        }
    }
    Err(format!("{name} is at {vaddr:#x}, in no loaded segment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_c_library_in_maps() {
        let maps = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1311 /usr/bin/python3.11
7f1c2a400000-7f1c2a428000 r--p 00000000 08:01 2627 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1c2a428000-7f1c2a59d000 r-xp 00028000 08:01 2627 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd5b1f2000-7ffd5b1f4000 r-xp 00000000 00:00 0 [vdso]
";
        let m = parse_maps(42, maps).unwrap();
        assert_eq!(m.path, PathBuf::from("/proc/42/map_files/7f1c2a400000-7f1c2a428000"));
        assert_eq!(m.shown, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(m.identity, ("08:01".to_owned(), 2627));
        assert!(parse_maps(1, "7f-8f r-xp 0 08:01 9 /lib/libcrypto.so.3\n").is_none());
        assert!(parse_maps(1, "7f-8f r-xp 0 08:01 9 /lib/libc.so.6 (deleted)\n").is_none());
        assert!(is_libc("ld-musl-x86_64.so.1") && is_libc("libc-2.31.so") && !is_libc("libcap.so.2"));
    }

    #[test]
    fn finds_clock_gettime_in_this_machines_libc() {
        // Whichever C library this test runs with: its clock_gettime must
        // be where the dynamic linker says it is.
        // The test binary is linked dynamically against the C library on
        // every machine this project builds on: not finding it is a failure,
        // never a test that quietly passes.
        let m = mapped(std::process::id() as i32).expect("this test's own C library in /proc/self/maps");
        let bytes = std::fs::read(&m.path).or_else(|_| std::fs::read(&m.shown)).unwrap();
        let off = function_offset(&bytes, "clock_gettime").unwrap();
        // The function's address minus the library's load base is its
        // vaddr; for glibc and musl the text segment's vaddr equals its file
        // offset.
        let f = libc::clock_gettime as *const () as usize as u64;
        let base = std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .find(|l| l.ends_with(&m.shown) && l.split_whitespace().nth(2) == Some("00000000"))
            .and_then(|l| u64::from_str_radix(l.split('-').next().unwrap(), 16).ok())
            .unwrap();
        assert_eq!(off, f - base, "clock_gettime at file offset {off:#x}");
        assert!(function_offset(&bytes, "no_such_function_here").unwrap_err().contains("no function"));
        assert!(function_offset(b"not elf", "x").is_err());
    }

    fn this_libc() -> Option<Vec<u8>> {
        let m = mapped(std::process::id() as i32)?;
        std::fs::read(&m.path).or_else(|_| std::fs::read(&m.shown)).ok()
    }

    /// Truncated and corrupted copies of a real C library: an error each
    /// time, never a panic (an overflow or an out-of-range slice).
    #[test]
    fn malformed_libraries_are_errors_not_panics() {
        let bytes = this_libc().expect("this test's own C library");
        for len in [0, 6, 0x20, 0x40, 0x3ff, bytes.len() / 2, bytes.len() - 1] {
            let r = std::panic::catch_unwind(|| function_offset(&bytes[..len], "clock_gettime"));
            assert!(r.is_ok(), "panicked on the first {len} bytes");
        }
        // e_phoff, e_shoff (u64), e_phentsize, e_phnum, e_shentsize,
        // e_shnum, e_shstrndx (u16): each set to its largest value.
        for (at, width) in [(0x20, 8), (0x28, 8), (0x36, 2), (0x38, 2), (0x3a, 2), (0x3c, 2), (0x3e, 2)] {
            let mut bad = bytes.clone();
            bad[at..at + width].fill(0xff);
            let r = std::panic::catch_unwind(|| function_offset(&bad, "clock_gettime"));
            assert!(r.is_ok(), "panicked with the header field at {at:#x} set to all ones");
        }
        // Every program header's p_offset/p_vaddr/p_filesz near u64::MAX.
        let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
        let (phentsize, phnum) = (
            usize::from(u16::from_le_bytes([bytes[0x36], bytes[0x37]])),
            usize::from(u16::from_le_bytes([bytes[0x38], bytes[0x39]])),
        );
        let mut bad = bytes.clone();
        for i in 0..phnum {
            for field in [8, 0x10, 0x20] {
                let at = phoff + i * phentsize + field;
                bad[at..at + 8].copy_from_slice(&(u64::MAX - 4).to_le_bytes());
            }
        }
        let r = std::panic::catch_unwind(|| function_offset(&bad, "clock_gettime"));
        assert!(r.is_ok_and(|r| r.is_err()), "corrupt program headers");
    }

    #[test]
    fn oversized_files_are_not_read() {
        let dir = crate::safe_fs::private_dir(&std::env::temp_dir(), "chaos-libc-test").unwrap();
        let path = dir.join("libc.so.6");
        // Sparse: no disk space, but a size past the limit.
        std::fs::File::create(&path).unwrap().set_len(MAX_LIBRARY_BYTES + 1).unwrap();
        let r = function_offset_in(&path, "clock_gettime");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(r.unwrap_err().contains("more than any C library"));
    }
}
