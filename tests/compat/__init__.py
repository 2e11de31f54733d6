"""Differential tests: the same scenarios on the documented package and on ours, compared.

`scenarios.py` holds the scenarios (importable without either package), `harness.py` what
they observe with, `runner.py` runs them for one package and prints their observations as
JSON, `test_compat.py` compares, scenario by scenario.

    scripts/upstream-venv.sh                      # once: spakky-saga 8.5.0 in .venv/upstream
    .venv/bin/python -m pytest -q tests/compat    # SPAKKY_SAGA_UPSTREAM_PYTHON=... to override
    .venv/upstream/bin/python -m tests.compat.runner upstream [scenario ...]   # one side's JSON
    .venv/bin/python -m tests.compat.runner ours [scenario ...]
"""
