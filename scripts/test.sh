#!/usr/bin/env bash
# Every check the project has: lint, strict typing, unit tests with the coverage gate (with
# tests/compat/, the differential tests against the documented spakky-saga 8.5.0, which run
# in .venv/upstream, and tests/test_pyright_typing.py, the cases of typing_tests/pyright/ under
# the pinned basedpyright), the mypy plugin's typing tests, and the examples under basedpyright
# (without our plugin).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/chromium.sh  # Debian's Chromium, for the console's browser tests
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check src tests examples benchmarks
echo "== mypy --strict, with our plugin (pyproject [tool.mypy])"
mypy src tests examples
echo "== the documented package, spakky-saga 8.5.0, in .venv/upstream (for tests/compat/)"
SPAKKY_SAGA_UPSTREAM_PYTHON=$(scripts/upstream-venv.sh)
export SPAKKY_SAGA_UPSTREAM_PYTHON
echo "== pytest (with branch coverage >= 95%; tests/compat/ compares with spakky-saga 8.5.0)"
coverage erase
coverage run -m pytest -q tests
coverage combine --quiet  # the data of the processes the tests started (patch = subprocess)
coverage report
echo "== mypy plugin: strict with mypy's proper_plugin (get_proper_type discipline)"
mypy --config-file typing_tests/proper_plugin.ini src/spakky_saga_mypy
echo "== typing tests (pytest-mypy-plugins, with the plugin; fresh cache dir per run/worker)"
# typing_tests/conftest.py points the cases at typing_tests/mypy.ini (plugins =
# spakky_saga_mypy) and gives mypy a new cache directory, one subdirectory per xdist worker.
pytest -q typing_tests -p no:cacheprovider
echo "== the examples with plain mypy --strict, without the plugin (what plugin-less users get)"
mypy --config-file scripts/mypy-without-plugin.ini examples
echo "== the plugin's command on the examples (spakky-saga-mypy adds the plugin itself)"
spakky-saga-mypy --config-file scripts/mypy-without-plugin.ini examples
echo "== basedpyright on the examples (no mypy plugin)"
basedpyright --level error examples
