//! Build the eBPF objects (crate `chaos-ebpf`, target bpfel-unknown-none)
//! with the pinned nightly and bpf-linker, into OUT_DIR, where `src/ebpf.rs`
//! embeds them with `include_bytes_aligned!`.
//!
//! `AYA_BUILD_SKIP=1` skips this (for `cargo check` on machines without the
//! eBPF toolchain); the binary then refuses to inject, with a message saying so.

/// Keep in sync with `EBPF_TOOLCHAIN` in scripts/setup.sh, which installs
/// it, and in xtask/src/test.rs, which lints the eBPF crate with it. A dated nightly whose LLVM major matches bpf-linker's (22).
const EBPF_TOOLCHAIN: &str = "nightly-2026-08-01";

fn main() -> anyhow::Result<()> {
    let package = aya_build::Package {
        name: "chaos-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../chaos-ebpf"),
        ..Default::default()
    };
    let skip = std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true");
    if skip {
        // Leave empty objects so include_bytes_aligned! still compiles.
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
        for name in ["chaos", "capabilities"] {
            let path = out.join(name);
            if !path.exists() {
                std::fs::write(path, [])?;
            }
        }
    }
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN))
}
