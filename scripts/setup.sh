#!/usr/bin/env bash
# Sets up everything lazyd needs on a fresh Debian (bookworm) machine, as
# root: the pinned Deno and npm tools (npm ci), the Debian packages the
# tests and the build use, and CRIU 4.1.1 in a private prefix. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }
[ "$(id -u)" = 0 ] || {
  echo "setup: run as root (CRIU, userfaultfd and the tests need it)" >&2
  exit 1
}
command -v npm >/dev/null || {
  echo "setup: npm is missing; install Node.js and npm first" >&2
  exit 1
}

stamp=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -x node_modules/.bin/deno ] || [ "$(cat node_modules/.lazyd-stamp 2>/dev/null)" != "$stamp" ]; then
  say "npm ci (Deno 2.9.6, protobuf-es, buf, esbuild)"
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$stamp" >node_modules/.lazyd-stamp
fi

# gcc/libc6-dev: the test workload and the launcher; libzstd-dev + zstd: the
# self-contained build; time: the benchmark's CPU and RSS figures;
# iproute2/util-linux: namespaces for the tests; openssl: TLS test certs;
# rsync: the pre-copy migration in the QEMU guest copies images with it.
need=()
for p in gcc libc6-dev libzstd-dev zstd time iproute2 util-linux openssl rsync; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  say "apt-get install ${need[*]}"
  apt-get -q update >&2
  DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends "${need[@]}" >&2
fi

scripts/install_criu.sh >/dev/null
say "ready: $(node_modules/.bin/deno --version | head -n1), $(/opt/lazyd/criu-4.1.1/bin/criu --version | head -n1)"
