#!/usr/bin/env bash
# Prepare a Debian 12 machine (as root) to build, demo and test csi-vduse:
# system packages, a virtual environment in .venv, and the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    python3 python3-venv python3-dev gcc libc6-dev linux-libc-dev  # build (cffi extensions)
    liburing-dev                                                   # io_uring, linked in statically
    librbd-dev librados-dev                                        # the RBD backend (and the fuzzer's fake)
    clang-14 libclang-rt-14-dev                                    # the fuzzer (libFuzzer, ASan)
    qemu-system-x86 busybox-static kmod apt dpkg                   # the test VM
    fio e2fsprogs xfsprogs util-linux iproute2 qemu-utils          # used inside the VM
    # A real one-node Ceph for the RBD tests (tests/ceph: monitor, OSD, CLI, and a manager
    # for the host's tests of GetCapacity), the kernel-side peers our RBD dataplane is
    # compared with (krbd is in the VM's kernel, rbd-nbd here), and qemu-storage-daemon's rbd
    # driver for the benchmark's third peer. Installing them starts no daemon.
    ceph-mon ceph-osd ceph-mgr ceph-common rbd-nbd qemu-block-extra
    buildah debootstrap                                            # container image build
)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if (( ${#missing[@]} )); then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ ! -x .venv/bin/python ]]; then
    /usr/bin/python3 -m venv .venv
fi
pip_log=$(mktemp)
if ! { .venv/bin/python -m pip install -q --upgrade pip &&
       .venv/bin/python -m pip install -q -e '.[test]'; } >"$pip_log" 2>&1; then
    cat "$pip_log"; rm -f "$pip_log"; echo "setup: pip install failed" >&2; exit 1
fi
rm -f "$pip_log"
echo "setup: ready ($(.venv/bin/python --version), $(qemu-system-x86_64 --version | head -1))"
