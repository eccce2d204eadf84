#!/usr/bin/env bash
# A fresh minimal root filesystem of a supported target, as a cached tarball: what
# `make bundle` downloads OS packages in and `make ansible-test` provisions. Needs root
# and debootstrap; reaches the distribution's mirror, nothing else.
#
#   ansible/rootfs.sh debian-12|ubuntu-24.04 OUT.tar
#
# Mirrors: APPLIANCE_DEBIAN_MIRROR (default http://deb.debian.org/debian) and
# APPLIANCE_UBUNTU_MIRROR (default http://archive.ubuntu.com/ubuntu). OUT.tar is left as
# it is when it exists already (delete it for a fresh one).
set -euo pipefail
usage() { echo "usage: $0 debian-12|ubuntu-24.04 OUT.tar" >&2; exit 2; }
[ $# -eq 2 ] || usage
case $1 in -h | --help) usage ;; esac
target=$1
out=$2
[ -e "$out" ] && exit 0
[ "$(id -u)" = 0 ] || { echo "rootfs: needs root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "rootfs: apt-get install debootstrap" >&2; exit 1; }

debian_mirror=${APPLIANCE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ubuntu_mirror=${APPLIANCE_UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
# "Ubuntu Archive Automatic Signing Key (2018) <ftpmaster@ubuntu.com>": the only key
# trusted for Ubuntu, whatever else the keyring package we fetch carries.
ubuntu_key=F6ECB3762474EDA9D21B7022871920D1991BC93C

work=$(mktemp -d "${TMPDIR:-/tmp}/rootfs.XXXXXX")
trap 'rm -rf --one-file-system "$work"' EXIT
tree=$work/tree
extra=()
case $target in
  debian-12)
    suite=bookworm mirror=$debian_mirror
    extra=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    ;;
  ubuntu-24.04)
    suite=noble mirror=$ubuntu_mirror
    # Debian's debootstrap knows Ubuntu's layout (the gutsy script) but not its key.
    curl -fsS -o "$work/Packages.gz" "$mirror/dists/noble/main/binary-amd64/Packages.gz"
    pool=$(gzip -dc "$work/Packages.gz" |
      awk '/^Package: ubuntu-keyring$/{p=1} p&&/^Filename:/{print $2; p=0}')
    curl -fsS -o "$work/keyring.deb" "$mirror/$pool"
    dpkg-deb -x "$work/keyring.deb" "$work/keyring"
    export GNUPGHOME=$work/gnupg
    mkdir -m 700 "$GNUPGHOME"
    gpg --quiet --import "$work/keyring/usr/share/keyrings/ubuntu-archive-keyring.gpg" 2>/dev/null
    gpg --export "$ubuntu_key" >"$work/ubuntu.gpg"
    [ -s "$work/ubuntu.gpg" ] || { echo "rootfs: Ubuntu's archive key $ubuntu_key not found" >&2; exit 1; }
    extra=(--keyring="$work/ubuntu.gpg")
    script=/usr/share/debootstrap/scripts/gutsy
    ;;
  *) usage ;;
esac
echo "rootfs: debootstrap $suite (minbase) from $mirror"
debootstrap --variant=minbase --include=systemd,ca-certificates "${extra[@]}" \
  "$suite" "$tree" "$mirror" ${script:-} >"$work/debootstrap.log" 2>&1 ||
  { tail -30 "$work/debootstrap.log" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
tar -C "$tree" -cf "$out.part" .
mv "$out.part" "$out"
echo "rootfs: $out ($(du -h "$out" | cut -f1))"
