#!/usr/bin/env bash
# Creates .venv/upstream: the documented package, spakky-saga 8.5.0 (import `spakky.saga`), in a
# venv of its own, for tests/compat/ to run the same scenarios on it and on ours and compare.
# It registers the same spakky plugin entry-point name ("spakky-saga") as this project, so it
# must never be installed into .venv. The spakky packages it depends on are pinned to the same
# release, so that the reference does not move when spakky publishes a new version.
# Idempotent: re-running only reinstalls when the pins below change. Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

pins=(spakky-saga==8.5.0 spakky==8.5.0 spakky-domain==8.5.0 spakky-auth==8.5.0)
venv=.venv/upstream
if [ ! -x "$venv/bin/python" ]; then
  .venv/bin/python -m venv "$venv"
fi
stamp="$venv/.installed-$(echo "${pins[*]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}" >&2
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
echo "$PWD/$venv/bin/python"
