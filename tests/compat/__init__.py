"""Differential tests: the same scenarios on the documented package and on ours, compared.

`scenarios.py` holds the scenarios (importable without either package), `runner.py` runs them
for one package and prints their observations as JSON, `test_compat.py` compares.
"""
