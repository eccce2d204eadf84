#!/usr/bin/env bash
# CPython 3.11 for Ubuntu 24.04 targets, installed at /opt/appliance/python3.11.
#
# Why: the offline bundle carries cp311 wheels (torch's CPU build exists only for 3.11
# here) and noble ships only Python 3.12, so the bundle brings its own interpreter.
# The source is Debian bookworm's python3.11 (upstream tarball + Debian's security
# patches), reached through a signed chain: InRelease (gpgv, Debian's keyring) ->
# Sources.xz (sha256) -> .dsc/.orig/.debian.tar (sha256). It is built in a noble
# chroot against noble's libraries, so noble's security updates for OpenSSL, SQLite,
# expat, ... apply to it; the .deps file names those packages.
#
#   ansible/build-python.sh OUT_DIR      (as root; needs debootstrap for rootfs.sh)
#
# Writes OUT_DIR/python3.11-ubuntu-24.04.tar.gz (extract with `tar -C / -xzf`) and
# OUT_DIR/python3.11-ubuntu-24.04.deps (noble runtime packages, one a line). Does
# nothing when both exist and are newer than this script. Mirrors as in rootfs.sh:
# APPLIANCE_DEBIAN_MIRROR, APPLIANCE_DEBIAN_SECURITY_MIRROR, APPLIANCE_UBUNTU_MIRROR.
set -euo pipefail

usage() {
  cat <<EOF
usage: $0 OUT_DIR

Builds CPython 3.11 (Debian bookworm source + its security patches) for Ubuntu 24.04
under /opt/appliance/python3.11 and writes, in OUT_DIR:
  python3.11-ubuntu-24.04.tar.gz  extract on the target with: tar -C / -xzf FILE
  python3.11-ubuntu-24.04.deps    noble packages the interpreter needs at run time
Cached: returns at once when both are newer than this script. Needs root.
EOF
}
case ${1:-} in -h | --help) usage; exit 0 ;; esac
[ $# -eq 1 ] || { usage >&2; exit 2; }

prefix=/opt/appliance/python3.11
out_dir=$1
tarball=$out_dir/python3.11-ubuntu-24.04.tar.gz
depsfile=$out_dir/python3.11-ubuntu-24.04.deps
self=$(readlink -f "$0")
if [ "$tarball" -nt "$self" ] && [ "$depsfile" -nt "$self" ]; then exit 0; fi

log() { echo "build-python: $*" >&2; }
die() { log "error: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (chroot, mount)"
for tool in curl gpgv xz patch dpkg tar gzip chroot mount; do
  command -v "$tool" >/dev/null || die "missing $tool on the build host"
done
debian_keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$debian_keyring" ] || die "apt-get install debian-archive-keyring"

repo=$(cd "$(dirname "$self")/.." && pwd)
build=$repo/build
src=$build/python/src # download cache, kept between runs
rootfs_tar=$build/os/ubuntu-24.04.tar
debian_mirror=${APPLIANCE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${APPLIANCE_DEBIAN_SECURITY_MIRROR:-http://security.debian.org/debian-security}
ubuntu_mirror=${APPLIANCE_UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
SECONDS=0
"$repo/ansible/rootfs.sh" ubuntu-24.04 "$rootfs_tar" # cached: returns at once when present
mkdir -p "$src" "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
tarball=$out_dir/${tarball##*/}
depsfile=$out_dir/${depsfile##*/}

# --- scratch space and chroots, always torn down --------------------------------------
work=$(mktemp -d "$build/python/work.XXXXXX")
mounts=() # mount points in the order mounted; unmounted in reverse
cleanup() {
  local i m
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    m=${mounts[i]}
    umount "$m" 2>/dev/null || umount -l "$m" || log "warning: could not unmount $m"
  done
  # Never delete through a mount (a bind of /dev would wipe the host's /dev): if
  # anything is still mounted below $work, leave it all for a human.
  if awk -v w="$work/" 'index($2, w) == 1 {found=1} END {exit !found}' /proc/mounts; then
    log "warning: mounts remain under $work; not deleting it"
  else
    rm -rf --one-file-system "$work"
  fi
}
trap cleanup EXIT

# new_chroot DIR: a fresh noble tree from the cached rootfs, ready for apt.
new_chroot() {
  local dir=$1
  mkdir -p "$dir"
  tar -C "$dir" -xf "$rootfs_tar"
  mount -t proc proc "$dir/proc" && mounts+=("$dir/proc")
  mount --bind /dev "$dir/dev" && mounts+=("$dir/dev")
  mount --bind /dev/pts "$dir/dev/pts" && mounts+=("$dir/dev/pts")
  # A private /dev/shm: configure probes POSIX semaphores there (multiprocessing
  # locks are compiled out when the probe fails), and nothing leaks onto the host.
  mount -t tmpfs -o size=64m tmpfs "$dir/dev/shm" && mounts+=("$dir/dev/shm")
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d" # no daemons start
  chmod 755 "$dir/usr/sbin/policy-rc.d"
  # debootstrap left only "noble main"; security fixes live in the other two. Its
  # ubuntu-keyring put the archive key in trusted.gpg.d, so apt verifies as usual.
  cat >"$dir/etc/apt/sources.list" <<EOF
deb $ubuntu_mirror noble main
deb $ubuntu_mirror noble-updates main
deb $ubuntu_mirror noble-security main
EOF
}
# in_chroot DIR CMD...: run with a clean environment (no host variables leak in).
in_chroot() {
  local dir=$1
  shift
  env -i HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    ${SOURCE_DATE_EPOCH:+SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH} \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin chroot "$dir" "$@"
}
apt_install() {
  local dir=$1
  shift
  in_chroot "$dir" apt-get -q -o Dpkg::Use-Pty=0 update >"$work/apt.log" 2>&1 ||
    { tail -20 "$work/apt.log" >&2; die "apt-get update failed in $dir"; }
  in_chroot "$dir" apt-get -q -o Dpkg::Use-Pty=0 install -y --no-install-recommends "$@" \
    >>"$work/apt.log" 2>&1 || { tail -20 "$work/apt.log" >&2; die "apt-get install $* failed"; }
}

# --- 1. authenticated Debian source -------------------------------------------------
# fetch URL FILE SHA256: download into the cache unless a copy with that hash is there.
fetch() {
  local url=$1 file=$2 sha=$3
  if [ -f "$file" ] && echo "$sha  $file" | sha256sum --quiet -c - 2>/dev/null; then return 0; fi
  # Debian's pool has '+' in names, which some mirrors' front ends read as a space.
  curl -fsS -o "$file.part" "${url//+/%2B}" || { rm -f "$file.part"; return 1; }
  echo "$sha  $file.part" | sha256sum --quiet -c - || die "sha256 mismatch: $url"
  mv "$file.part" "$file"
}
# Prints "version suite-base-url directory" for each python3.11 in the suite's Sources.
candidates() {
  local base=$1 suite=$2 release sums sha
  release=$work/$suite.Release
  curl -fsS -o "$work/$suite.InRelease" "$base/dists/$suite/InRelease" ||
    die "cannot download $base/dists/$suite/InRelease"
  # Read only what the signature covers (gpgv --output), never the raw file.
  gpgv --keyring "$debian_keyring" --output "$release" "$work/$suite.InRelease" 2>"$work/gpgv.log" ||
    { cat "$work/gpgv.log" >&2; die "bad signature on $suite InRelease"; }
  valid_until=$(sed -n 's/^Valid-Until: //p' "$release")
  if [ -n "$valid_until" ] && [ "$(date -d "$valid_until" +%s)" -lt "$(date +%s)" ]; then
    die "$suite InRelease expired on $valid_until (stale mirror or replay)"
  fi
  sha=$(awk '/^SHA256:/{s=1; next} /^[^ ]/{s=0} s && $3 == "main/source/Sources.xz" {print $1}' "$release")
  [ -n "$sha" ] || die "$suite InRelease lists no main/source/Sources.xz"
  sums=$work/$suite.Sources.xz
  curl -fsS -o "$sums" "$base/dists/$suite/main/source/Sources.xz"
  echo "$sha  $sums" | sha256sum --quiet -c - || die "sha256 mismatch: $suite Sources.xz"
  xz -dc "$sums" >"$work/$suite.Sources"
  awk -v RS= -v base="$base" -v suite="$suite" '/(^|\n)Package: python3\.11\n/ {
      v = d = ""; n = split($0, l, "\n")
      for (i = 1; i <= n; i++) {
        if (l[i] ~ /^Version: /) v = substr(l[i], 10)
        if (l[i] ~ /^Directory: /) d = substr(l[i], 12)
      }
      print v, base, d, suite
    }' "$work/$suite.Sources"
}
# Sha256 lines ("sha size name") of one version's stanza in a suite's Sources.
stanza_sums() {
  awk -v RS= -v ver="$2" '/(^|\n)Package: python3\.11\n/ && index($0, "\nVersion: " ver "\n") {
      n = split($0, l, "\n")
      for (i = 1; i <= n; i++) {
        if (l[i] ~ /^Checksums-Sha256:/) { s = 1; continue }
        if (l[i] !~ /^ /) s = 0
        if (s) print substr(l[i], 2)
      }
    }' "$work/$1.Sources"
}

log "checking Debian bookworm, bookworm-updates and bookworm-security for python3.11"
{
  candidates "$debian_mirror" bookworm
  candidates "$debian_mirror" bookworm-updates
  candidates "$security_mirror" bookworm-security
} >"$work/candidates"
[ -s "$work/candidates" ] || die "no python3.11 source in bookworm"
# Newest first, by Debian's version order.
mapfile -t sorted < <(sort -u "$work/candidates")
for ((i = 1; i < ${#sorted[@]}; i++)); do
  for ((j = i; j > 0; j--)); do
    if dpkg --compare-versions "${sorted[j]%% *}" gt "${sorted[j - 1]%% *}"; then
      tmp=${sorted[j]} sorted[j]=${sorted[j - 1]} sorted[j - 1]=$tmp
    else break; fi
  done
done
# Take the newest whose files the mirror actually serves. An older one is a fallback
# with a loud warning (recorded in APPLIANCE-BUILD.txt), not a silent choice: the
# security archive has been seen listing a version whose source files 404.
chosen="" skipped_versions=""
for c in "${sorted[@]}"; do
  read -r version base dir suite <<<"$c"
  ok=1 files=()
  while read -r sha _ name; do
    fetch "$base/$dir/$name" "$src/$name" "$sha" || { ok=0; break; }
    files+=("$src/$name")
  done < <(stanza_sums "$suite" "$version")
  if [ "$ok" = 1 ] && [ ${#files[@]} -ge 3 ]; then chosen=$c; break; fi
  log "WARNING: python3.11 $version ($suite) is listed but its files cannot be downloaded"
  skipped_versions+="$version ($suite, listed but not downloadable) "
done
[ -n "$chosen" ] || die "no python3.11 source could be downloaded"
read -r version base dir suite <<<"$chosen"
log "using python3.11 $version from $suite"
orig=$(printf '%s\n' "${files[@]}" | grep -E '\.orig\.tar\.(gz|xz)$')
debtar=$(printf '%s\n' "${files[@]}" | grep -E '\.debian\.tar\.(gz|xz)$')
dsc=$(printf '%s\n' "${files[@]}" | grep -E '\.dsc$')

# --- 2. upstream tree + Debian's security patches -----------------------------------
broot=$work/build-root
new_chroot "$broot"
tree=$broot/build/src
mkdir -p "$tree" "$work/debian"
tar -C "$tree" --strip-components=1 -xf "$orig"
tar -C "$work/debian" -xf "$debtar"
# Reproducible timestamps: the Debian changelog's date, as dpkg does.
source_epoch=$(date -d "$(sed -n '0,/^ -- /s/^ -- .*>  //p' "$work/debian/debian/changelog")" +%s)

# Security fixes, and the upstream fixes they are built on. Applied: a patch whose
# name or header (the text before the diff) names a CVE or "security"; one of Debian's
# numbered 3.11 backports (NNNN-3.11-gh-*), which its changelog lists under CVEs
# (CVE-2024-9287, CVE-2025-0938, ...); and any cherry-pick of an upstream CPython
# commit (CVE-2023-41105's patch does not apply without gh-102281's fix, for one).
# Debian's own layout/packaging patches (multiarch, deb-locations, sysconfig schemes,
# ensurepip-disabled, ...) match none of these and stay out: this is a plain /opt
# install.
patches=$work/debian/debian/patches
(cd "$tree" && grep -l '#include "pycore_' Modules/*.c | sort) >"$work/pycore.before" || true
applied=() not_applied=()
while read -r p; do
  case $p in '' | '#'*) continue ;; esac
  p=${p%% *}
  header=$(awk '/^(---$|--- |diff |Index: )/{exit} {print}' "$patches/$p")
  if [[ $p == *CVE* || $p =~ ^[0-9]{4}-3\.11-gh- ]] || grep -qiE 'CVE-[0-9]{4}-[0-9]+|security|cherry.picked from commit|^Origin: (upstream|https://github\.com/python/cpython/)|^From [0-9a-f]{40} ' <<<"$header"; then
    patch -d "$tree" -p1 --batch --forward --no-backup-if-mismatch -s -i "$patches/$p" \
      >"$work/patch.log" 2>&1 || { cat "$work/patch.log" >&2; die "patch $p does not apply (security or upstream fix)"; }
    applied+=("$p")
  else
    not_applied+=("$p")
  fi
done <"$patches/series"
if find "$tree" -name '*.rej' | grep -q .; then die "patch rejects left in the tree"; fi
# Debian links pyexpat into the interpreter (Py_BUILD_CORE_BUILTIN); here setup.py
# builds it as a shared module without Py_BUILD_CORE_MODULE, and CVE-2026-4224's fix
# makes it include an internal pycore_ header, which needs that define (3.12's
# pyexpat.c sets it the same way). Done for any module a patch newly made use
# internal headers, so a later patch of the same kind needs no edit here.
fixups=()
while IFS= read -r f; do
  grep -q 'Py_BUILD_CORE' "$tree/$f" && continue
  sed -i '1i #ifndef Py_BUILD_CORE_BUILTIN\n#  define Py_BUILD_CORE_MODULE 1\n#endif' "$tree/$f"
  fixups+=("$f: define Py_BUILD_CORE_MODULE (a patch made it use internal headers)")
done < <(cd "$tree" && grep -l '#include "pycore_' Modules/*.c | sort | comm -13 "$work/pycore.before" -)
log "applied ${#applied[@]} security/upstream patches, left out ${#not_applied[@]} Debian packaging ones"

# --- 3. build in the noble chroot ---------------------------------------------------
log "installing build dependencies in the noble chroot"
# No readline/ncurses/gdbm/tk: a server interpreter needs no line editing or GUI, and
# each is one less runtime package. libexpat1-dev: use noble's patched expat instead
# of the copy bundled in 3.11.2 (which has known CVEs).
apt_install "$broot" build-essential pkg-config libssl-dev libsqlite3-dev libffi-dev \
  zlib1g-dev libbz2-dev liblzma-dev uuid-dev libexpat1-dev
configure_args=(--prefix="$prefix" --with-ensurepip=install --with-system-expat)
cat >"$broot/build/build.sh" <<EOF
#!/bin/bash
# Runs inside the build chroot.
set -euo pipefail
cd /build/src
# No PGO/LTO: they triple the build time on 2 cores. noble's gcc already enables
# PIE, -fstack-protector-strong, _FORTIFY_SOURCE=3, stack-clash and CET by default.
./configure ${configure_args[*]} >/build/configure.log 2>&1 || { tail -40 /build/configure.log; exit 1; }
make -j2 >/build/make.log 2>&1 || { tail -60 /build/make.log; exit 1; }
make install DESTDIR=/build/stage >/build/install.log 2>&1 || { tail -40 /build/install.log; exit 1; }
EOF
log "configure && make -j2 && make install (takes a while)"
# SOURCE_DATE_EPOCH also makes compileall write hash-checked .pyc files: the tarball's
# fixed mtimes would make timestamp-checked ones stale, recompiled at every start.
SOURCE_DATE_EPOCH=$source_epoch in_chroot "$broot" /bin/bash /build/build.sh ||
  die "build failed (logs under $broot/build while it exists)"

stage=$broot/build/stage
py=$stage$prefix/bin/python3.11
# Modules the appliance depends on; setup.py only warns when one is missing.
missing=$(in_chroot "$broot" "${py#"$broot"}" -c '
import importlib
mods = "_ssl _hashlib _sqlite3 _ctypes _lzma _bz2 zlib _uuid _decimal pyexpat _multiprocessing".split()
bad = []
for m in mods:
    try:
        importlib.import_module(m)
    except ImportError:
        bad.append(m)
print(" ".join(bad))')
[ -z "$missing" ] || die "extension modules not built: $missing (see configure.log)"

# --- 4. trim, strip, record -----------------------------------------------------------
lib=$stage$prefix/lib/python3.11
rm -rf "$lib/test" "$lib/idlelib" "$lib/tkinter" "$lib/turtledemo" "$lib/turtle.py" \
  "$lib/lib2to3/tests" "$lib/ctypes/test" "$lib/distutils/tests" "$lib/unittest/test" \
  "$stage$prefix/bin/idle3" "$stage$prefix/bin/idle3.11"
# The static libpython (~50 MB) and python.o only serve embedding; extension modules
# on Linux link without them.
rm -f "$lib"/config-3.11-*/libpython3.11.a "$lib"/config-3.11-*/python.o
# Keep the plain .pyc files: /opt is read-only to the service, so without them every
# start recompiles the stdlib in memory. The -O/-OO variants are never used.
find "$lib" -name '*.opt-[12].pyc' -delete
# shellcheck disable=SC2016 # expanded by the shell inside the chroot
in_chroot "$broot" /bin/bash -c '
  find "$1" -type f \( -name "*.so" -o -path "*/bin/*" \) -print0 |
  while IFS= read -r -d "" f; do
    if readelf -h "$f" >/dev/null 2>&1; then strip --strip-unneeded "$f"; fi
  done' strip "${stage#"$broot"}$prefix"

# Runtime packages: ldd every ELF, map each library to its owner with dpkg -S.
# shellcheck disable=SC2016 # expanded by the shell inside the chroot
in_chroot "$broot" /bin/bash -c '
  set -euo pipefail
  find "$1" -type f -print0 | while IFS= read -r -d "" f; do
    # Executables and shared objects only (readelf also accepts .o and .a files).
    readelf -h "$f" 2>/dev/null | grep -qE "Type: +(EXEC|DYN)" || continue
    ldd "$f" | awk -v f="$f" "/not found/ {print \"MISSING \" \$1 \" (\" f \")\"; next}
                              /=> \\// {print \$3} /^\t\\// {print \$1}"
  done | sort -u | while read -r l; do
    case $l in MISSING*) echo "$l"; continue ;; esac
    # usr-merge: dpkg knows /usr/lib/... while ldd may say /lib/...
    for p in "$l" "$(readlink -f "$l")" "/usr$l"; do
      # Skip "diversion by libc6 from: ..." lines (the ld.so usr-merge diversion).
      o=$(dpkg -S "$p" 2>/dev/null | grep -v "^diversion by" | head -n1) || o=""
      if [ -n "$o" ]; then echo "${o%%:*}"; continue 2; fi
    done
    echo "UNOWNED $l"
  done | sort -u' deps "${stage#"$broot"}$prefix" >"$work/deps"
if grep -E '^(MISSING|UNOWNED)' "$work/deps" >&2; then die "unresolved libraries (above)"; fi
mapfile -t deps <"$work/deps"

{
  echo "CPython for the appliance, built by ansible/build-python.sh"
  echo "source: Debian python3.11 $version ($suite)"
  echo "source files (sha256 checked against the signed $suite InRelease):"
  for f in "${files[@]}"; do echo "  $(sha256sum "$f" | cut -d' ' -f1)  ${f##*/}"; done
  [ -z "$skipped_versions" ] || echo "WARNING: newer source not used: $skipped_versions"
  echo "target: Ubuntu 24.04 (noble)"
  echo "configure: ${configure_args[*]}"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "linked against (noble, at build time):"
  # shellcheck disable=SC2016 # a dpkg-query format, not shell
  in_chroot "$broot" dpkg-query -W -f '  ${Package} ${Version}\n' "${deps[@]}"
  echo "Debian patches applied: security fixes and upstream backports (${#applied[@]}, in series order):"
  printf '  %s\n' "${applied[@]}"
  if [ ${#fixups[@]} -gt 0 ]; then
    echo "appliance fix-ups:"
    printf '  %s\n' "${fixups[@]}"
  fi
  echo "Debian patches not applied (Debian packaging/layout):"
  printf '  %s\n' "${not_applied[@]}"
} >"$stage$prefix/APPLIANCE-BUILD.txt"
# dsc kept in the download cache only; named here so a reader can find the chain.
: "$dsc"

log "packing $tarball"
# Only the prefix itself: extracting must not touch the modes of /opt on the target.
tar -C "$stage" --sort=name --mtime="@$source_epoch" --owner=0 --group=0 --numeric-owner \
  -cf - "${prefix#/}" | gzip -n -9 >"$work/python.tar.gz"

# --- 5. smoke test in a fresh noble tree with only the runtime packages ---------------
log "smoke test in a fresh noble chroot"
troot=$work/test-root
new_chroot "$troot"
apt_install "$troot" "${deps[@]}"
cp "$work/python.tar.gz" "$troot/tmp/python.tar.gz"
in_chroot "$troot" tar -C / -xzf /tmp/python.tar.gz
in_chroot "$troot" "$prefix/bin/python3.11" -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, uuid, hashlib, decimal, venv, ensurepip, xml.etree.ElementTree, multiprocessing.synchronize; print(ssl.OPENSSL_VERSION)' ||
  die "smoke test: imports failed"
# As an unprivileged user: the service never runs as root, and /opt stays read-only.
in_chroot "$troot" chroot --userspec=nobody:nogroup / /bin/sh -c \
  "cd /tmp && HOME=/tmp $prefix/bin/python3.11 -m venv /tmp/v && /tmp/v/bin/pip --version" ||
  die "smoke test: venv/pip failed"

# --- 6. publish -------------------------------------------------------------------------
cp "$work/deps" "$depsfile.part" && mv "$depsfile.part" "$depsfile"
cp "$work/python.tar.gz" "$tarball.part" && mv "$tarball.part" "$tarball"
log "done in $((SECONDS / 60))m$((SECONDS % 60))s: $tarball ($(du -h "$tarball" | cut -f1)), runtime packages: $(tr '\n' ' ' <"$depsfile")"
