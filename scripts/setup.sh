#!/usr/bin/env bash
# Create (or reuse) the project's Python 3.12 virtual environment in .venv and install the
# package with its test extras. Idempotent: it reinstalls only when setup.cfg has changed.
# Set BEATSSL_VENV to put the environment elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${BEATSSL_VENV:-.venv}"

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.12; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' \
        >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  # pyenv keeps interpreters that are installed but not selected.
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12; do
    if [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

if [ ! -x "$venv/bin/python" ]; then
  python=$(find_python) || { echo "setup.sh: Python 3.12 not found (set PYTHON=...)" >&2; exit 1; }
  echo "setup.sh: creating $venv with $python" >&2
  "$python" -m venv "$venv"
fi

stamp="$venv/.beatssl-installed"
want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup.sh: installing beatssl-jax[test] into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
  echo "$want" > "$stamp"
fi
