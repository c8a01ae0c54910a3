#!/usr/bin/env bash
# The aarch64 toolchain of the `arm` / `arm-neon` targets (`make arm-env`), on an x86_64 Debian/Ubuntu:
#   1. the cross compiler g++-aarch64-linux-gnu (export, objdump) and qemu-user (run under emulation);
#   2. an aarch64 runtime sysroot: Debian's aarch64 CPython unpacked with `dpkg -x` (never
#      apt-installed: python3.11:arm64 would replace the amd64 one) and the aarch64 apache-tvm
#      wheel unpacked by this machine's pip into SYSROOT/site.
# Idempotent: what is there already is kept. Without apt (or root) it says so and exits 0; the
# arm tests then skip, naming what is missing.
# Usage: bash scripts/arm_env.sh [SYSROOT]   (default: $TVMQ_ARM_SYSROOT or ~/.cache/tvmq/arm-sysroot)
# Env:   PYTHON  an x86 python with pip (default python3)
set -euo pipefail
PY=${PYTHON:-python3}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}
SYSROOT=${1:-${TVMQ_ARM_SYSROOT:-$CACHE/tvmq/arm-sysroot}}
TVM_VERSION=$("$PY" -c 'from importlib.metadata import version; print(version("apache-tvm"))' 2>/dev/null || echo 0.27.0.post1)
FFI_VERSION=$("$PY" -c 'from importlib.metadata import version; print(version("apache-tvm-ffi"))' 2>/dev/null || echo 0.1.14.post1)
STAMP="$SYSROOT/.tvmq-arm-$TVM_VERSION"
export DEBIAN_FRONTEND=noninteractive

have_tools() { command -v aarch64-linux-gnu-g++ >/dev/null && command -v qemu-aarch64 >/dev/null; }
if have_tools && [ -e "$STAMP" ]; then echo "arm-env: ready ($SYSROOT)"; exit 0; fi
if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null || [ "$(id -u)" != 0 ]; then
  echo "arm-env: skipped: needs root with apt-get and dpkg (Debian/Ubuntu); the arm tests will skip"; exit 0
fi

# 1. cross compiler + binutils + qemu-user
if ! have_tools; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends g++-aarch64-linux-gnu qemu-user
fi

# 2. arm64 package lists (multiarch), only to download arm64 .debs
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  apt-get update -q
elif ! apt-cache show python3.11-minimal:arm64 >/dev/null 2>&1; then
  apt-get update -q
fi

# 3. aarch64 CPython 3.11 + the shared libraries it and libtvm_runtime load -> SYSROOT
mkdir -p "$SYSROOT"
PKGS="libc6 libgcc-s1 gcc-12-base libstdc++6 zlib1g libexpat1 libffi8 libbz2-1.0 liblzma5 libcrypt1
  libssl3 libuuid1 libpython3.11-minimal libpython3.11-stdlib python3.11-minimal"
DEBS=$(mktemp -d)
trap 'rm -rf "$DEBS"' EXIT
( cd "$DEBS" && apt-get download -q $(for p in $PKGS; do echo "$p:arm64"; done) )
for deb in "$DEBS"/*.deb; do dpkg -x "$deb" "$SYSROOT"; done

# 4. aarch64 wheels, resolved and unpacked for the foreign platform by this machine's pip
"$PY" -m pip install -q --target "$SYSROOT/site" --no-compile --upgrade \
  --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
  --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
  "apache-tvm==$TVM_VERSION" "apache-tvm-ffi==$FFI_VERSION" numpy ml_dtypes typing_extensions psutil cloudpickle
# 5. bytecode for the emulated interpreter, compiled natively (same CPython minor, same .pyc): without
#    it every start under qemu recompiles the stdlib and TVM's Python (measured: 77 s -> 44 s a start)
if "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  "$PY" -m compileall -q -j 0 "$SYSROOT/site" "$SYSROOT/usr/lib/python3.11" >/dev/null || true
fi
touch "$STAMP"
echo "arm-env: ready ($SYSROOT)"
