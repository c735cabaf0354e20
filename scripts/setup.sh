#!/usr/bin/env bash
# Install what building and testing chaos needs, skipping what is there.
# Safe to run any number of times. Versions are pinned here and in
# rust-toolchain.toml / chaos-user/build.rs.
set -euo pipefail

HOST_TOOLCHAIN=1.99.0
# A dated nightly whose LLVM major (22) matches bpf-linker's: eBPF objects are
# built with -Z build-std=core for bpfel-unknown-none.
EBPF_TOOLCHAIN=nightly-2026-08-01
BPF_LINKER_VERSION=0.13.0
LLVM_MAJOR=22

APT_PACKAGES=(
  # bpf-linker links against LLVM
  "llvm-${LLVM_MAJOR}-dev" "libpolly-${LLVM_MAJOR}-dev" libzstd-dev
  # the tests: namespaces, tc, ping, a bulk-transfer tool for benchmarks
  iproute2 iputils-ping iperf3
  # kernel matrix: QEMU (TCG) for Debian's kernels in VMs
  qemu-system-x86
)

log() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

have_toolchain() { rustup toolchain list | grep -q "^$1"; }
if ! have_toolchain "$HOST_TOOLCHAIN"; then
  log "installing rust $HOST_TOOLCHAIN"
  rustup toolchain install "$HOST_TOOLCHAIN" --profile minimal -c clippy,rustfmt
fi
if ! have_toolchain "$EBPF_TOOLCHAIN"; then
  log "installing rust $EBPF_TOOLCHAIN (eBPF)"
  rustup toolchain install "$EBPF_TOOLCHAIN" --profile minimal -c rust-src,clippy,rustfmt
fi

if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  log "building bpf-linker $BPF_LINKER_VERSION against LLVM $LLVM_MAJOR (about 80 s)"
  LLVM_PREFIX="/usr/lib/llvm-${LLVM_MAJOR}" cargo "+$HOST_TOOLCHAIN" install --quiet --locked \
    bpf-linker --version "$BPF_LINKER_VERSION" --no-default-features --features "llvm-${LLVM_MAJOR}"
fi
