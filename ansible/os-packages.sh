#!/usr/bin/env bash
# The OS packages a target needs, with everything they depend on, as a local apt
# repository inside the bundle: the playbook installs nginx, nftables, Python and the rest
# from it, never from the internet. Needs root (a chroot of the target release).
#
#   ansible/os-packages.sh debian-12|ubuntu-24.04 OUT_DIR [EXTRA_PACKAGE...]
#
# Writes OUT_DIR/ (the .debs, Packages, Packages.gz, Release: a flat repository) and
# OUT_DIR/bootstrap.sh: a shell script carrying python3 and python3-apt (and their
# dependencies) that installs them on a server without Python, for the playbook's first
# play (Ansible's `script` module needs no Python on the target).
#
# The dependency closure is resolved as if nothing were installed, so a server older or
# smaller than the minimal root filesystem still finds every dependency here; apt on the
# server takes only what it lacks.
set -euo pipefail
usage() { echo "usage: $0 debian-12|ubuntu-24.04 OUT_DIR [EXTRA_PACKAGE...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
case $1 in -h | --help) usage ;; esac
target=$1
out=$2
shift 2
cd "$(dirname "$0")/.."
ROOT=$PWD

# What the roles install (appliance, proxy, firewall, qdrant; see their tasks).
packages=(python3 python3-apt python3-cryptography nginx nftables openssl ca-certificates
  libmagic1 libgomp1 tesseract-ocr tesseract-ocr-eng poppler-utils)
debian_mirror=${APPLIANCE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ubuntu_mirror=${APPLIANCE_UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
case $target in
  debian-12)
    packages+=(python3-venv)
    sources="deb $debian_mirror bookworm main
deb $debian_mirror bookworm-updates main
deb http://security.debian.org/debian-security bookworm-security main"
    ;;
  ubuntu-24.04)
    # The appliance runs on the bundle's own Python 3.11 there (ansible/build-python.sh);
    # its runtime libraries come in as EXTRA_PACKAGE arguments.
    sources="deb $ubuntu_mirror noble main universe
deb $ubuntu_mirror noble-updates main universe
deb $ubuntu_mirror noble-security main universe"
    ;;
  *) usage ;;
esac
packages+=("$@")
command -v dpkg-scanpackages >/dev/null || { echo "os-packages: apt-get install dpkg-dev" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "os-packages: needs root (chroot)" >&2; exit 1; }

base=$ROOT/build/os/$target.tar
ansible/rootfs.sh "$target" "$base"
mkdir -p "$ROOT/build"
work=$(mktemp -d "$ROOT/build/os-packages.XXXXXX")
tree=$work/tree
cleanup() {
  for m in dev/pts dev proc; do
    mountpoint -q "$tree/$m" 2>/dev/null && { umount "$tree/$m" || umount -l "$tree/$m"; }
  done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
mkdir "$tree"
tar -C "$tree" -xf "$base"
mount -t proc proc "$tree/proc"
mount --bind /dev "$tree/dev"
mount --bind /dev/pts "$tree/dev/pts"
cp /etc/resolv.conf "$tree/etc/resolv.conf"
# debootstrap's own keyring is trusted for these sources (Ubuntu: rootfs.sh pinned it).
rm -f "$tree/etc/apt/sources.list.d/"*
printf '%s\n' "$sources" >"$tree/etc/apt/sources.list"
in_root() { chroot "$tree" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
in_root apt-get update -qq

# Download the closure of PACKAGES into DIR (inside the tree), resolved against an empty
# dpkg status: every dependency is fetched, the installed ones included.
download() {
  local dir=$1
  shift
  mkdir -p "$tree$dir/partial"
  : >"$tree/tmp/empty-status"
  in_root apt-get -qq -y --download-only --no-install-recommends \
    -o Dir::State::status=/tmp/empty-status -o Dir::Cache::archives="$dir" \
    -o APT::Get::Show-Versions=0 install "$@" >/dev/null
  rmdir "$tree$dir/partial" 2>/dev/null || rm -rf "${tree:?}$dir/partial"
  rm -f "$tree$dir/lock"
}
# A flat repository: Packages and a Release file listing its hashes (the server trusts it
# because the bundle's SHA256SUMS, checked by the playbook, covers every file).
index() {
  local dir=$1
  (cd "$dir" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null >Packages &&
    gzip -9nk Packages &&
    {
      printf 'Origin: appliance-bundle\nLabel: appliance-bundle\nSuite: appliance\n'
      printf 'Codename: appliance\nDate: Thu, 01 Jan 1970 00:00:00 UTC\nSHA256:\n'
      for f in Packages Packages.gz; do
        printf ' %s %s %s\n' "$(sha256sum "$f" | cut -d' ' -f1)" "$(stat -c %s "$f")" "$f"
      done
    } >Release)
}

echo "os-packages: $target: ${packages[*]}"
download /var/tmp/repo "${packages[@]}"
download /var/tmp/boot python3 python3-apt
rm -rf "$out"
mkdir -p "$out"
cp "$tree/var/tmp/repo/"*.deb "$out/"
index "$out"

boot=$work/boot
mkdir "$boot"
cp "$tree/var/tmp/boot/"*.deb "$boot/"
index "$boot"
{
  cat <<'SH'
#!/bin/sh
# Installs python3 and python3-apt from the .debs appended to this script, with apt
# pointed at them alone (the server's own sources are never read). Prints "present" when
# Python is there already, "installed" after installing it.
set -eu
if command -v python3 >/dev/null 2>&1 && python3 -c 'import apt' >/dev/null 2>&1; then
  echo present
  exit 0
fi
dir=$(mktemp -d /var/tmp/appliance-bootstrap.XXXXXX)
trap 'rm -rf "$dir"' EXIT
chmod 755 "$dir"
line=$(awk '/^__DEBS_FOLLOW__$/ { print NR + 1; exit }' "$0")
tail -n +"$line" "$0" | tar -x -C "$dir"
mkdir -p "$dir/lists/partial" "$dir/archives/partial"
echo "deb [trusted=yes] file:$dir/repo ./" >"$dir/sources.list"
set -- -o Dir::Etc::SourceList="$dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
  -o Dir::State::Lists="$dir/lists" -o Dir::Cache::Archives="$dir/archives" -qq
apt-get "$@" update
DEBIAN_FRONTEND=noninteractive apt-get "$@" -y --no-install-recommends install python3 python3-apt >/dev/null
echo installed
exit 0
__DEBS_FOLLOW__
SH
  tar -C "$work" -c --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    --transform 's,^boot,repo,' boot
} >"$out/bootstrap.sh"
chmod 755 "$out/bootstrap.sh"
echo "os-packages: $out: $(ls "$out"/*.deb | wc -l) packages, $(du -sh "$out" | cut -f1); bootstrap.sh $(du -h "$out/bootstrap.sh" | cut -f1)"
