"""A spakky application for the CLI tests: `spakky-saga recover --app` given the application
(tests/test_cli_app_targets.py)."""
