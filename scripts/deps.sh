#!/usr/bin/env bash
# Installs the Debian 12 packages bowstack needs to build, test and benchmark.
# Runs apt-get only when something is missing. Must run as root.
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config git clang clang-format libclang-rt-14-dev
  libcli11-dev libfmt-dev libspdlog-dev nlohmann-json3-dev liburing-dev zlib1g-dev libisal-dev
  libgtest-dev libgmock-dev libbenchmark-dev libpugixml-dev
  libgnutls28-dev   # NBD over TLS (docs/tls.md)
  libsystemd-dev    # socket activation and sd_notify
  # real clients and peer servers for tests and benchmarks
  libnbd-bin python3-libnbd nbdkit qemu-utils fio   # libnbd-bin has nbdfuse, nbdinfo, nbdcopy
  # TLS certificates and pre-shared keys for the TLS tests (certtool, psktool)
  gnutls-bin
  # systemd-socket-activate for the socket activation test
  systemd
  qemu-block-extra  # qemu-nbd's rbd driver: the peer of bench/rbd_bench.py
  # ext4 on the export
  e2fsprogs util-linux mount fuse3 procps psmisc
  # instruction counts for micro-benchmarks (bench/micro)
  valgrind
  # era metadata interoperability (era_restore, era_dump, era_invalidate, era_check)
  thin-provisioning-tools
  # dm-integrity oracle: integritysetup dump reads csum's layout=integrity superblocks
  cryptsetup-bin
  # md v1.2 oracle: mdadm --examine / --examine-bitmap read the mirror's legs
  mdadm
  # RBD leaf: librbd to build against, and a one-node cluster for its tests
  # (scripts/ceph-cluster.sh)
  librbd-dev ceph-mon ceph-osd ceph-mgr ceph-common
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps.sh: missing packages (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
