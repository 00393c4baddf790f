#!/usr/bin/env bash
# Prepare this checkout to run or test sendit: Debian packages (when root) and a
# virtualenv in .venv from the requirements files. Safe to run again: it only does
# what is missing. Usage: scripts/bootstrap.sh [run|test]
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"

apt_packages=(orthanc dcmtk tesseract-ocr tesseract-ocr-eng)  # tesseract: DEID_OCR (sendit/deid/ocr.py)
if [ "$mode" = test ]; then
    apt_packages+=(orthanc-dicomweb dicom3tools redis-server postgresql chromium chromium-driver nginx shellcheck python3-dev fonts-dejavu-core)
    # tests/deploy/test_compose.py: Debian's Docker engine and docker-compose, and debootstrap
    # for scripts/local_images.sh (the test starts dockerd as root). Not where an engine is
    # installed already (Docker's own docker-ce packages conflict with docker.io).
    if ! command -v dockerd >/dev/null; then
        apt_packages+=(docker.io)
    fi
    if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then
        apt_packages+=(docker-compose)
    fi
    apt_packages+=(debootstrap)
fi

missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bootstrap: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" python3-venv >/dev/null
    else
        echo "bootstrap: missing Debian packages (install them as root): ${missing[*]}" >&2
    fi
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# The pinned lock files (pip-compile of pyproject.toml: `make lock`): the runtime alone, or
# the runtime with the test, lint and benchmark groups.
req=requirements.lock
[ "$mode" = test ] && req=requirements-dev.lock
stamp=".venv/.installed-$mode"
if [ ! -f "$stamp" ] || [ "$req" -nt "$stamp" ]; then
    .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/pip install -q --disable-pip-version-check -r "$req"
    touch "$stamp"
fi
mkdir -p var data
