#!/usr/bin/env bash
# Every check the project has: lint, strict typing, unit tests with the coverage gate,
# the mypy plugin's typing tests, and the examples under basedpyright (without our plugin).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check src tests examples benchmarks
echo "== mypy --strict"
mypy src tests examples
echo "== pytest (with branch coverage >= 95%)"
coverage erase
coverage run -m pytest -q tests
coverage report
if [ -d typing_tests ] && compgen -G "typing_tests/*.yml" >/dev/null; then
  echo "== typing tests (pytest-mypy-plugins)"
  pytest -q typing_tests -p no:cacheprovider
fi
echo "== basedpyright on the examples (no mypy plugin)"
basedpyright --level error examples
