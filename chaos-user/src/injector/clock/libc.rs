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

/// The file offset of the function `name` exported by the ELF64
/// little-endian shared object `bytes` (its `.dynsym`), which is what a
/// uprobe is attached at.
pub fn function_offset(bytes: &[u8], name: &str) -> Result<u64, String> {
    let u16_at = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| bytes.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let u64_at = |o: usize| bytes.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let bad = |what: &str| format!("not a 64-bit little-endian ELF file ({what})");
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(bad("header"));
    }
    let phoff = u64_at(0x20).ok_or_else(|| bad("e_phoff"))? as usize;
    let shoff = u64_at(0x28).ok_or_else(|| bad("e_shoff"))? as usize;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(|| bad("e_phentsize"))?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(|| bad("e_phnum"))?);
    let shentsize = usize::from(u16_at(0x3a).ok_or_else(|| bad("e_shentsize"))?);
    let shnum = usize::from(u16_at(0x3c).ok_or_else(|| bad("e_shnum"))?);
    // Section header: sh_type at 4, sh_offset at 0x18, sh_size at 0x20,
    // sh_link at 0x28 (include/uapi/linux/elf.h, Elf64_Shdr).
    let section = |i: usize| -> Option<(u32, usize, usize, u32)> {
        let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((u32_at(at + 4)?, u64_at(at + 0x18)? as usize, u64_at(at + 0x20)? as usize, u32_at(at + 0x28)?))
    };
    const SHT_DYNSYM: u32 = 11;
    let dynsym = (0..shnum)
        .filter_map(section)
        .find(|s| s.0 == SHT_DYNSYM)
        .ok_or_else(|| "no .dynsym section: not a shared library".to_owned())?;
    let (_, str_off, str_size, _) = section(dynsym.3 as usize).ok_or_else(|| bad("dynstr"))?;
    let strings = bytes.get(str_off..str_off.saturating_add(str_size)).ok_or_else(|| bad("dynstr range"))?;
    let mut vaddr = None;
    // Elf64_Sym: st_name u32, st_info u8, st_other u8, st_shndx u16,
    // st_value u64, st_size u64 (24 bytes).
    for i in 0..dynsym.2 / 24 {
        let at = dynsym.1 + i * 24;
        let (Some(name_off), Some(info), Some(shndx), Some(value)) =
            (u32_at(at), bytes.get(at + 4).copied(), u16_at(at + 6), u64_at(at + 8))
        else {
            return Err(bad("symbol table range"));
        };
        const STT_FUNC: u8 = 2;
        if shndx == 0 || info & 0xf != STT_FUNC {
            continue;
        }
        let Some(rest) = strings.get(name_off as usize..) else { continue };
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        if &rest[..end] == name.as_bytes() {
            vaddr = Some(value);
            break;
        }
    }
    let vaddr = vaddr.ok_or_else(|| format!("no function {name} in its dynamic symbols"))?;
    // Virtual address to file offset, through the PT_LOAD segment holding
    // it (Elf64_Phdr: p_type u32 at 0, p_offset at 8, p_vaddr at 0x10,
    // p_filesz at 0x20).
    const PT_LOAD: u32 = 1;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let (Some(ty), Some(off), Some(va), Some(filesz)) =
            (u32_at(at), u64_at(at + 8), u64_at(at + 0x10), u64_at(at + 0x20))
        else {
            return Err(bad("program headers"));
        };
        if ty == PT_LOAD && vaddr >= va && vaddr < va + filesz {
            return Ok(off + (vaddr - va));
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
        let Some(m) = mapped(std::process::id() as i32) else { return };
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
}
