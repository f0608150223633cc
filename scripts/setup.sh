#!/usr/bin/env bash
# Install what pys3fs needs on a Debian machine: libfuse2 + fuse3 from apt, and a
# virtualenv in .venv with pys3fs and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
# attr: setfattr/getfattr; s3fs: s3fs-fuse itself, which the interop tests mount
for pkg in fuse3 libfuse2 python3-venv attr s3fs; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# A Python that already has venv (pyenv, python.org builds) does not need python3-venv.
if python3 -c "import venv, ensurepip" 2>/dev/null; then
    missing=("${missing[@]/python3-venv/}")
fi
if [ -n "${missing[*]// /}" ]; then
    echo "setup: installing ${missing[*]} with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ${missing[*]} >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
echo "setup: pys3fs $(.venv/bin/python -c 'import pys3fs; print(pys3fs.__version__)') ready in .venv"
