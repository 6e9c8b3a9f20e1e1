#!/usr/bin/env bash
# Installs the Debian packages the tests need besides Python, only those missing, saying what
# it does. Safe to run again: installed packages are left alone.
#
#   docker-compose            validates docker-compose.yml (tests/deploy); no Docker engine needed
#   chromium chromium-driver  the browser tests
#
# Usage: scripts/install-system.sh [--check | --if-possible] [PACKAGE...]
#   --check        list what is missing and exit 1 if anything is, without installing
#   --if-possible  (what `make test` uses) where nothing can be installed (not Debian, not
#                  root and no password-less sudo) or the install fails, say so and exit 0:
#                  the tests that need the packages then skip, naming them. Unless CI=true:
#                  there everything is installed and every test runs, or this fails.
#   PACKAGE...     these packages instead of the list above
set -euo pipefail

DEFAULT_PACKAGES=(docker-compose chromium chromium-driver)

check_only=false
if_possible=false
case "${1:-}" in
--check)
    check_only=true
    shift
    ;;
--if-possible)
    if_possible=true
    shift
    ;;
esac
if [[ $# -gt 0 ]]; then
    packages=("$@")
else
    packages=("${DEFAULT_PACKAGES[@]}")
fi

required=true
if [[ "$if_possible" == true ]]; then
    case "${CI:-}" in
    true | TRUE | True | 1 | yes) required=true ;;
    *) required=false ;;
    esac
fi

# Cannot install: fail with code 2, or under --if-possible (and not CI=true) say what will
# skip and carry on.
cannot_install() {
    if [[ "$required" == true ]]; then
        echo "install-system: $1" >&2
        exit 2
    fi
    echo "install-system: $1" >&2
    echo "install-system: skipping; the tests that need ${packages[*]} will skip and say so" \
        "(with CI=true they are required)" >&2
    exit 0
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    cannot_install "no dpkg/apt-get here (not Debian-based); install ${packages[*]} yourself"
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
        cannot_install "run as root (or install sudo) to install ${missing[*]}"
    fi
    # Under --if-possible (make test) never stop at a password prompt.
    if [[ "$required" == false ]] && ! sudo -n true >/dev/null 2>&1; then
        cannot_install "sudo needs a password; run \`make install-system\` to install ${missing[*]}"
    fi
    sudo=(sudo)
fi

echo "install-system: installing ${missing[*]}"
if ! {
    echo "+ apt-get update" &&
        "${sudo[@]}" apt-get update &&
        echo "+ apt-get install -y --no-install-recommends ${missing[*]}" &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "${missing[@]}"
}; then
    cannot_install "apt-get could not install ${missing[*]}"
fi
echo "install-system: installed ${missing[*]}"
