#!/usr/bin/env bash
# Creates .venv with Python >= 3.12 and installs the project with its dev tools.
# Idempotent: re-running only installs what changed. Used by `make demo` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  # .python-version makes pyenv's python3 resolve to 3.12 inside the project.
  for candidate in python3 python3.12 python3.13 "$HOME/.pyenv/versions/3.12.1/bin/python3"; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python >= 3.12 is required (pyenv: 'pyenv install 3.12')" >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  "$(pick_python)" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[postgres,otel,testing,console]" --group dev
  rm -f .venv/.installed-*
  touch "$stamp"
fi
