#!/usr/bin/env bash
# Install Moorage and what its tests need on a Debian machine (run as root).
#
#   bash scripts/install.sh          # system packages + .venv with Moorage and test extras
#   bash scripts/install.sh --list-packages   # the Debian packages it installs
#
# Idempotent: packages already present are not touched, an existing .venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every Debian package the code, the tests' real components and CI use, from one list (see
# the comments in it). `--list-packages` prints what would be installed, and stops.
mapfile -t SYSTEM_PACKAGES < <(
  sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e '/^[[:space:]]*$/d' scripts/system-packages.txt)
if [ "${1:-}" = "--list-packages" ]; then
  printf '%s\n' "${SYSTEM_PACKAGES[@]}"
  exit 0
fi

missing=()
for package in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "Installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Django 6 needs Python 3.12 or newer.
find_python() {
  local candidate
  for candidate in python3.13 python3.12 python3; do
    if command -v "$candidate" >/dev/null \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
    if [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  return 1
}
PYTHON=$(find_python) || { echo "Moorage needs Python >= 3.12; none found." >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "Installed: $(.venv/bin/moorage --version)"
