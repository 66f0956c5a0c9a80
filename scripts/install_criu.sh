#!/usr/bin/env bash
# Installs CRIU 4.1.1 (Debian trixie's build) and its crit decoder into a
# private prefix, without installing or upgrading any system package.
#
# Bookworm's own CRIU 3.17 fails on current kernels, and trixie's 4.1.1 wants
# glibc 2.41. So: fetch trixie's criu and its whole shared-library closure with
# `apt-get download`, unpack them with `dpkg-deb -x` under the prefix, and run
# criu through the prefix's own dynamic loader. crit is trixie's pure-Python
# pycriu on the host's python3 with a private protobuf runtime.
#
# Result: $PREFIX/bin/criu and $PREFIX/bin/crit (wrappers). Idempotent: a
# prefix whose stamp matches the resolved package set is only re-verified.
#
# Usage: scripts/install_criu.sh [--force]
# Env:   LAZYD_CRIU_PREFIX (default /opt/lazyd/criu-4.1.1)
set -euo pipefail

PREFIX=${LAZYD_CRIU_PREFIX:-/opt/lazyd/criu-4.1.1}
WANT=4.1.1
SUITE=trixie
LIB=usr/lib/x86_64-linux-gnu
FORCE=0
[ "${1:-}" = --force ] && FORCE=1

say() { echo "install_criu: $*" >&2; }
die() {
  echo "install_criu: error: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || die "needs root (apt-get update/download and writing $PREFIX)"
for c in apt-get apt-cache apt-config dpkg dpkg-deb awk; do
  command -v "$c" >/dev/null || die "missing command '$c' (this script needs a Debian host)"
done
[ "$(dpkg --print-architecture)" = amd64 ] || die "only amd64 hosts are supported"
case "$PREFIX" in /*) ;; *) die "LAZYD_CRIU_PREFIX must be absolute" ;; esac

apt_q=(-q -o APT::Sandbox::User=root -o DPkg::Lock::Timeout=120)
eval "$(apt-config shell SRCDIR Dir::Etc::sourceparts/d PREFDIR Dir::Etc::preferencesparts/d)"
SRCDIR=${SRCDIR:-/etc/apt/sources.list.d/}
PREFDIR=${PREFDIR:-/etc/apt/preferences.d/}

have_suite() {
  apt-get indextargets --format '$(CODENAME) $(TARGET_OF) $(COMPONENT)' 2>/dev/null |
    awk -v s=$SUITE '$1==s && $2=="deb" && $3=="main" {f=1} END {exit !f}'
}
suite_cached() { apt-cache policy 2>/dev/null | grep -q "n=$SUITE,.*c=main,b=amd64"; }

# The trixie suite is only ever a download source: pinned to priority 1 so
# that no apt-get upgrade/install on this host ever picks a package from it.
if ! have_suite; then
  host=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  uri=$(apt-get indextargets --format '$(CODENAME) $(TARGET_OF) $(COMPONENT) $(REPO_URI)' 2>/dev/null |
    awk -v s="$host" '$1==s && $2=="deb" && $3=="main" {print $4; exit}')
  [ -n "$uri" ] || die "no '$host main' apt source to derive a $SUITE source from"
  say "adding ${SRCDIR%/}/lazyd-trixie.sources (download only)"
  cat >"${SRCDIR%/}/lazyd-trixie.sources" <<SRC
# lazyd: CRIU 4.1.1 is downloaded from here into $PREFIX; never installed.
Types: deb
URIs: ${uri%/}
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
if ! grep -rqsE "^Pin: *release.*n=$SUITE" /etc/apt/preferences "$PREFDIR"; then
  mkdir -p "$PREFDIR"
  printf 'Package: *\nPin: release n=%s\nPin-Priority: 1\n' $SUITE >"${PREFDIR%/}/lazyd-trixie"
fi
if ! suite_cached; then
  say "apt-get update (package lists only)"
  apt-get "${apt_q[@]}" update >&2 || say "apt-get update reported errors; checking the lists anyway"
  suite_cached || die "no $SUITE package lists after apt-get update (mirror unreachable?)"
fi

ver=$(apt-cache show "criu/$SUITE" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
[ -n "$ver" ] || die "$SUITE has no criu package"
case "$ver" in "$WANT"-*) ;; *) die "$SUITE offers criu $ver, lazyd is tested against $WANT" ;; esac

mapfile -t closure < <(apt-cache -o APT::Default-Release=$SUITE depends --recurse --no-recommends \
  --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances criu python3-pycriu 2>/dev/null |
  grep -E '^[a-z0-9]' | grep -vE '^(python3|python3-minimal|python3\.[0-9]+.*|libpython3.*|python3-protobuf)$' | sort -u)
[ "${#closure[@]}" -gt 0 ] || die "cannot resolve criu's dependencies in $SUITE"
# One apt-cache call for all versions; virtual packages simply do not appear.
mapfile -t specs < <(apt-cache show "${closure[@]/%//$SUITE}" 2>/dev/null |
  awk '/^Package:/ {p=$2} /^Version:/ && !(p in seen) {seen[p]=1; print p "=" $2}')
pyproto=$(apt-cache policy python3-protobuf | awk '/Installed:|Candidate:/ {v=$2} END {print v}')
command -v python3 >/dev/null || die "python3 is needed for crit"
stamp=$(printf '%s\n' "${specs[@]}" "pyprotobuf=$pyproto" | sort)

wrappers() { # dir
  mkdir -p "$1/bin"
  cat >"$1/bin/criu" <<W
#!/bin/sh
# criu $ver (Debian $SUITE) on its own glibc, from $PREFIX.
exec '$PREFIX/$LIB/ld-linux-x86-64.so.2' --library-path '$PREFIX/$LIB' --argv0 criu '$PREFIX/usr/sbin/criu' "\$@"
W
  cat >"$1/bin/crit" <<W
#!/bin/sh
# crit from Debian $SUITE's python3-pycriu, pure-Python protobuf runtime.
PYTHONPATH='$PREFIX/usr/lib/python3/dist-packages:$PREFIX/pyproto/usr/lib/python3/dist-packages'
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python
export PYTHONPATH PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION
exec python3 -s -m crit "\$@"
W
  chmod 755 "$1/bin/criu" "$1/bin/crit"
}
works() {
  "$PREFIX/bin/criu" --version 2>/dev/null | grep -q "Version: $WANT" &&
    "$PREFIX/bin/crit" --help >/dev/null 2>&1
}

if [ "$FORCE" = 0 ] && [ "$(cat "$PREFIX/STAMP" 2>/dev/null)" = "$stamp" ] && works; then
  say "criu $ver already installed in $PREFIX"
else
  mkdir -p "$(dirname "$PREFIX")"
  stage=$(mktemp -d "$PREFIX.stage.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  mkdir "$stage/debs"
  say "downloading ${#specs[@]} packages for criu $ver"
  (cd "$stage/debs" && apt-get "${apt_q[@]}" download "${specs[@]}" "python3-protobuf=$pyproto" >&2) ||
    die "apt-get download failed"
  for f in "$stage"/debs/*.deb; do
    case "${f##*/}" in
    python3-protobuf_*) dpkg-deb -x "$f" "$stage/pyproto" ;;
    *) dpkg-deb -x "$f" "$stage" ;;
    esac
  done
  rm -rf "$stage/debs" "$stage/usr/share/doc" "$stage/usr/share/man" "$stage/usr/share/locale"
  echo "$stamp" >"$stage/STAMP"
  rm -rf "$PREFIX"
  mv "$stage" "$PREFIX"
  trap - EXIT
  chmod 755 "$PREFIX"
  wrappers "$PREFIX"
  works || die "the unpacked criu or crit in $PREFIX does not run"
  say "installed criu $ver into $PREFIX"
fi
wrappers "$PREFIX"
"$PREFIX/bin/criu" check --feature uffd-noncoop >/dev/null 2>&1 ||
  say "warning: this kernel lacks non-cooperative userfaultfd; lazy restores will fail"
echo "$PREFIX/bin/criu"
