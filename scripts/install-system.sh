#!/usr/bin/env bash
# Installs the Debian packages the tests need besides Python, only those missing, saying what
# it does. Safe to run again: installed packages are left alone.
#
#   docker-compose            validates docker-compose.yml (tests/deploy); no Docker engine needed
#   chromium chromium-driver  the browser tests
#
# Usage: scripts/install-system.sh [--check] [PACKAGE...]
#   --check     list what is missing and exit 1 if anything is, without installing
#   PACKAGE...  these packages instead of the list above
set -euo pipefail

DEFAULT_PACKAGES=(docker-compose chromium chromium-driver)

check_only=false
if [[ "${1:-}" == "--check" ]]; then
    check_only=true
    shift
fi
if [[ $# -gt 0 ]]; then
    packages=("$@")
else
    packages=("${DEFAULT_PACKAGES[@]}")
fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system: no dpkg/apt-get here (not Debian-based); install ${packages[*]} yourself" >&2
    exit 2
fi

missing=()
for package in "${packages[@]}"; do
    if dpkg-query --show --showformat='${Status}' "$package" 2>/dev/null |
        grep --quiet "install ok installed"; then
        echo "install-system: $package is installed"
    else
        missing+=("$package")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-system: nothing to install"
    exit 0
fi
if [[ "$check_only" == true ]]; then
    echo "install-system: missing: ${missing[*]} (run scripts/install-system.sh to install)" >&2
    exit 1
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-system: run as root (or install sudo) to install ${missing[*]}" >&2
        exit 2
    fi
    sudo=(sudo)
fi

echo "install-system: installing ${missing[*]}"
echo "+ apt-get update"
"${sudo[@]}" apt-get update
echo "+ apt-get install -y --no-install-recommends ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
echo "install-system: installed ${missing[*]}"
