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
  # kernel matrix: QEMU (TCG) boots Debian's kernels through virtme-ng. In the
  # guest: udev makes /dev/virtio-ports/* (without it virtme-ng loses the
  # command's exit code), kmod loads sch_fq/sch_netem/ifb, busybox goes
  # into virtme-ng's initramfs, `file` reads a kernel image's version.
  qemu-system-x86 udev kmod busybox-static file python3-venv
  gcc python3 openssl libfaketime # clock-skew: tests' C probe, python, openssl verify; bench baseline
  sqlite3 strace # io-error: a real program under test; the ptrace baseline of the benchmark
  prometheus # promtool: the tests lint the metrics exposition with `promtool check metrics`
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

# --- Kernel matrix: virtme-ng and Debian's 6.1 / 6.12 kernels ---------------
# Layout shared with xtask/src/kernels.rs:
#   $VM_CACHE/virtme-ng/bin/vng                       virtme-ng, in its own venv
#   $VM_CACHE/kernels/<label>/boot/vmlinuz-<release>  a Debian linux-image .deb,
#   $VM_CACHE/kernels/<label>/lib/modules/<release>/  extracted, depmod run
# The .debs are extracted rather than installed: installing would build an
# initramfs (~1 min each) and put foreign kernels into the host's /boot, and
# neither is needed — virtme-ng builds its own initramfs and makes the
# extracted modules the guest's /lib/modules/<release>. Not under /var/cache:
# virtme-ng mounts an empty tmpfs there in the guest, which would hide them.
VM_CACHE="${CHAOS_VM_CACHE:-/var/lib/chaos-dev}"
VIRTME_NG_VERSION=1.42
# label and kernel series: the newest linux-image-<series>.* in apt's lists.
VM_KERNELS=("debian-6.1 6.1" "debian-6.12 6.12")

have_virtme_ng() {
  compgen -G "$VM_CACHE/virtme-ng/lib/python3*/site-packages/virtme_ng-$VIRTME_NG_VERSION.dist-info" >/dev/null
}

vm_missing() {
  have_virtme_ng || return 0
  local k
  for k in "${VM_KERNELS[@]}"; do
    compgen -G "$VM_CACHE/kernels/${k%% *}/boot/vmlinuz-*" >/dev/null || return 0
  done
  return 1
}

# The newest flavour-less amd64 image of a series: linux-image-6.1.0-56-amd64,
# linux-image-6.12.117+deb12-amd64 (not -rt-, -cloud-, -dbg, -unsigned).
kernel_package() {
  local re="^linux-image-${1//./\\.}\.[0-9][^ -]*(-[0-9]+)?-amd64\$"
  apt-cache search --names-only "^linux-image-${1//./\\.}\." | awk '{print $1}' | { grep -E "$re" || true; } \
    | sort -V | tail -n 1
}

download() { (cd "$2" && rm -f ./*.deb && apt-get download -q "$1" >download.log 2>&1); }

fetch_kernel() {
  local label=$1 series=$2 dest="$VM_CACHE/kernels/$1" pkg tmp release
  tmp=$(mktemp -d "$VM_CACHE/kernels/.fetch-XXXXXX")
  pkg=$(kernel_package "$series")
  # Stale or missing apt lists: refresh once and look again.
  if [[ -z $pkg ]] || ! download "$pkg" "$tmp"; then
    apt-get update -qq || true
    pkg=$(kernel_package "$series")
    if [[ -z $pkg ]] || ! download "$pkg" "$tmp"; then
      cat "$tmp/download.log" >&2 2>/dev/null || true
      log "WARNING: no linux-image-$series.*-amd64 package could be fetched: the $label VM tests will fail"
      rm -rf "$tmp"
      return 0
    fi
  fi
  log "extracting $pkg for the $label VM"
  # Extract beside the destination and rename at the end, so that an
  # interrupted setup leaves nothing that looks installed.
  if dpkg-deb -x "$tmp"/*.deb "$tmp/root" \
    && release=$(basename "$(compgen -G "$tmp/root/boot/vmlinuz-*")") \
    && release=${release#vmlinuz-} \
    && depmod -b "$tmp/root" "$release" \
    && echo "$pkg" >"$tmp/root/PACKAGE"; then
    rm -rf "$dest"
    mv "$tmp/root" "$dest"
  else
    log "WARNING: could not extract $pkg: the $label VM tests will fail"
  fi
  rm -rf "$tmp"
}

if vm_missing; then
  if [[ $EUID -ne 0 ]]; then
    log "skipping the VM kernels (virtme-ng, Debian kernels): needs root (sudo ./x setup)"
  else
    mkdir -p "$VM_CACHE/kernels"
    if ! have_virtme_ng; then
      log "installing virtme-ng $VIRTME_NG_VERSION into $VM_CACHE/virtme-ng"
      # Debian's python, not whatever python3 comes first on PATH (sudo
      # resets PATH); its own venv, so nothing else's packages interfere.
      /usr/bin/python3 -m venv --clear "$VM_CACHE/virtme-ng" \
        && "$VM_CACHE/virtme-ng/bin/pip" install --quiet --disable-pip-version-check \
          "virtme-ng==$VIRTME_NG_VERSION" \
        || log "WARNING: could not install virtme-ng: the VM tests will fail"
    fi
    for k in "${VM_KERNELS[@]}"; do
      compgen -G "$VM_CACHE/kernels/${k%% *}/boot/vmlinuz-*" >/dev/null || fetch_kernel $k
    done
  fi
fi
