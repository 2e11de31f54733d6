#!/usr/bin/env bash
# Creates .venv/dbos: DBOS Transact 3.4.0 (library-level durable execution), in a venv of its
# own, for benchmarks/dbos_compare.py to run the same 10-step workflow on it as
# benchmarks/durable_bench.py runs on ours. Optional: nothing in `make test` uses it.
# Python 3.11 (issue 15: DBOS's SQLite backend needs it on this machine): `python3.11` or
# pyenv's 3.11 (the project's .python-version makes plain python3 resolve to 3.12 here).
# psycopg is DBOS's PostgreSQL driver, and the benchmark uses it to create a throwaway database.
# Idempotent: re-running only reinstalls when the pins below change. Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  for candidate in python3.11 "$HOME"/.pyenv/versions/3.11*/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 is required for .venv/dbos (pyenv: 'pyenv install 3.11')" >&2
  return 1
}

pins=(dbos==3.4.0 "psycopg[binary]")
venv=.venv/dbos
if [ ! -x "$venv/bin/python" ]; then
  "$(pick_python)" -m venv "$venv"
fi
stamp="$venv/.installed-$(echo "${pins[*]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}" >&2
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
echo "$PWD/$venv/bin/python"
