#!/usr/bin/env bash
# Runs typing_tests/ under the oldest mypy of the range pyproject.toml declares for the
# `mypy` extra (the newest is the one `make test` uses), in a venv of its own kept in
# .venv/oldest-mypy so that the project's .venv stays on the newest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

oldest=$(.venv/bin/python - <<'PY'
import re, tomllib
spec = next(s for s in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["mypy"] if s.startswith("mypy"))
low = re.search(r">=\s*([0-9.]+)", spec).group(1)
print(low + ".0" * (2 - low.count(".")))
PY
)
venv=.venv/oldest-mypy
if [ ! -x "$venv/bin/python" ]; then
  .venv/bin/python -m venv "$venv"
fi
stamp="$venv/.installed-$oldest-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e . \
    "mypy==$oldest" "pytest>=9" "pytest-asyncio>=1.5" "pytest-mypy-plugins>=4.1"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
echo "== typing tests under the oldest supported mypy ($("$venv/bin/mypy" --version))"
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" -m pytest -q typing_tests -p no:cacheprovider
