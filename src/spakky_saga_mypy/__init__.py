"""spakky_saga_mypy: the mypy plugin for spakky_saga.

Enable it with `plugins = spakky_saga_mypy` in mypy's config, or run `spakky-saga-mypy`
(`python -m spakky_saga_mypy`) with any mypy arguments. See docs/mypy-plugin.md.
"""

import itertools
from typing import Final

from mypy.plugin import Plugin

# Imported before `plugin()` is defined: importing the submodule `plugin` binds that name on
# this package, and the function below must win, also on a second build in one process
# (dmypy, mypy.api) where mypy looks `plugin` up again.
try:
    from spakky_saga_mypy.plugin import SpakkySagaPlugin
except ImportError as error:  # an unsupported mypy without the internals we use
    _IMPORT_ERROR: ImportError | None = error
else:
    _IMPORT_ERROR = None

__version__ = "0.1.0"
"""The plugin's version. mypy records it (and this module's hash) with its cache: bump it
with every release so that users' stale caches are invalidated."""

SUPPORTED_MYPY: Final = ((1, 20), (2, 5))
"""Supported mypy versions: at least the first, below the second (as in pyproject.toml)."""


def _release(version: str) -> tuple[int, int]:
    parts = [*version.split("+", maxsplit=1)[0].split("."), "0"]
    minor_digits = "".join(itertools.takewhile(str.isdigit, parts[1]))
    return int(parts[0]), int(minor_digits or 0)


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point: the plugin class, or a clear error for an unsupported mypy."""
    low, high = SUPPORTED_MYPY
    if not low <= _release(version) < high:
        raise RuntimeError(
            f"spakky_saga_mypy supports mypy >={low[0]}.{low[1]},<{high[0]}.{high[1]}, "
            f"but this is mypy {version}. Install a supported version "
            "(pip install 'spakky-saga-typed[mypy]') or remove spakky_saga_mypy from plugins."
        )
    if _IMPORT_ERROR is not None:
        raise RuntimeError(f"spakky_saga_mypy cannot load on mypy {version}") from _IMPORT_ERROR
    return SpakkySagaPlugin


__all__ = ["SUPPORTED_MYPY", "__version__", "plugin"]
