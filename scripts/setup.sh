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
  curl # net-refuse: a real client whose connections are refused
  nginx # pause: a real service whose health check a freeze trips
  dnsmasq-base bind9-dnsutils # dns-error: a real resolver to fail lookups against, and dig
  prometheus # promtool: the tests lint the metrics exposition with `promtool check metrics`
  shellcheck # lint: deploy/e2e.sh, which needs a cluster and is not run here
  # containers as targets: real runtimes for the tests in the VMs (they do not
  # run on this host; see tests/src/fixtures/containers.rs), and protoc, which
  # the containerd client's build script needs for containerd's API
  docker.io podman containerd runc crun containernetworking-plugins protobuf-compiler
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

# --- Kernel matrix: virtme-ng and Debian's 5.10 / 6.1 / 6.12 / 7.2 kernels ---
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
# label, kernel series, and where the package comes from: `host` (this
# machine's apt sources) or a Debian suite, read through a private apt
# configuration (see private_apt) so that the host's sources stay as they are.
# The package is the newest linux-image-<series>.* in those lists.
VM_KERNELS=("debian-5.10 5.10 bullseye" "debian-6.1 6.1 host" "debian-6.12 6.12 host" "debian-7.2 7.2 sid")
DEBIAN_MIRROR=http://deb.debian.org/debian

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

# apt options that read one Debian suite from lists of its own under the
# cache, instead of the host's sources, lists and package cache. Nothing of
# the host's apt state is read or written through them.
private_apt() {
  local dir="$VM_CACHE/apt/$1"
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
  # Debian's archive keyring signs every suite (bullseye's and sid's Release).
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR $1 main" \
    >"$dir/sources.list"
  APT_OPTS=(-o "Dir::Etc::sourcelist=$dir/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o "Acquire::Languages=none")
}

# The newest flavour-less amd64 image of a series: linux-image-6.1.0-56-amd64,
# linux-image-6.12.117+deb12-amd64 (not -rt-, -cloud-, -dbg, -unsigned).
# Uses APT_OPTS (empty: the host's apt configuration).
kernel_package() {
  local re="^linux-image-${1//./\\.}\.[0-9][^ -]*(-[0-9]+)?-amd64\$"
  apt-cache "${APT_OPTS[@]}" search --names-only "^linux-image-${1//./\\.}\." 2>/dev/null | awk '{print $1}' \
    | { grep -E "$re" || true; } | sort -V | tail -n 1
}

# Download an image package into $2, with the parts it depends on: since
# 6.17 or so Debian's linux-image-<abi> is an empty package that depends on
# linux-binary-<abi> (the vmlinuz), linux-modules-<abi> and linux-base-<abi>
# (System.map, config, modules.builtin). Older images hold everything.
download() {
  (
    cd "$2" && rm -f ./*.deb && apt-get "${APT_OPTS[@]}" download -q "$1" >download.log 2>&1 || exit 1
    parts=$(dpkg-deb -f "$1"_*.deb Depends | tr ',|' '\n\n' | awk -v abi="-${1#linux-image-}" \
      '$1 ~ /^linux-[a-z]+-/ && substr($1, length($1) - length(abi) + 1) == abi { print $1 }')
    [[ -z $parts ]] || apt-get "${APT_OPTS[@]}" download -q $parts >>download.log 2>&1
  )
}

# Newer packages (sid's 7.x) ship /usr/lib/modules/<release>/{vmlinuz,config,
# System.map} and nothing in /boot; move them to the layout of the older ones,
# which xtask/src/kernels.rs and virtme-ng expect.
usr_layout() {
  local root=$1 dir release f
  compgen -G "$root/boot/vmlinuz-*" >/dev/null && return 0
  for dir in "$root"/usr/lib/modules/*; do
    [[ -f $dir/vmlinuz ]] || continue
    release=${dir##*/}
    mkdir -p "$root/boot" "$root/lib/modules"
    for f in vmlinuz config System.map; do
      [[ ! -e $dir/$f ]] || mv "$dir/$f" "$root/boot/$f-$release"
    done
    mv "$dir" "$root/lib/modules/$release"
  done
}

fetch_kernel() {
  local label=$1 series=$2 suite=$3 dest="$VM_CACHE/kernels/$1" pkg tmp release
  APT_OPTS=()
  [[ $suite == host ]] || private_apt "$suite"
  tmp=$(mktemp -d "$VM_CACHE/kernels/.fetch-XXXXXX")
  pkg=$(kernel_package "$series")
  # Stale or missing apt lists: refresh once and look again.
  if [[ -z $pkg ]] || ! download "$pkg" "$tmp"; then
    apt-get "${APT_OPTS[@]}" update -qq || true
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
  local deb ok=true
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/root" || ok=false; done
  $ok && usr_layout "$tmp/root" || ok=false
  if $ok \
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

# What checks deploy/ offline (./x test's lint section), in a venv of its
# own as virtme-ng's: kubernetes-validate carries every Kubernetes
# release's API schemas; helm-python-sdk is Helm's Go SDK (template engine,
# values schema, linter) built as a C library, since no registry here
# serves the helm binary; cloudcoil's Prometheus Operator models carry the
# ServiceMonitor's schema (scripts/check-chart.py). No cluster and no
# network once installed. The last is pinned to what Python 3.11 gets.
KUBE_TOOLS=(kubernetes-validate==1.37.0 helm-python-sdk==0.2.2 cloudcoil-models-prometheus-operator==0.80.1.0)
# A stamp naming what was installed: a change of pins installs again.
if [[ $EUID -eq 0 ]] && [[ "$(cat "$VM_CACHE/kube-tools/installed" 2>/dev/null)" != "${KUBE_TOOLS[*]}" ]]; then
  log "installing ${KUBE_TOOLS[*]} into $VM_CACHE/kube-tools"
  mkdir -p "$VM_CACHE"
  if /usr/bin/python3 -m venv --clear "$VM_CACHE/kube-tools" \
    && "$VM_CACHE/kube-tools/bin/pip" install --quiet --disable-pip-version-check "${KUBE_TOOLS[@]}"; then
    echo "${KUBE_TOOLS[*]}" >"$VM_CACHE/kube-tools/installed"
  else
    log "WARNING: could not install ${KUBE_TOOLS[*]}: the manifest and chart checks will fail"
  fi
fi
