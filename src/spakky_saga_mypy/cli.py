"""`spakky-saga-mypy` / `python -m spakky_saga_mypy`: mypy with this plugin enabled.

mypy has no `--plugin` flag (plugins come from its config), so this command parses mypy's
arguments and config exactly as `mypy` does, runs the build with the configured plugins plus
ours (unless the config already has it), and prints mypy's own output and exit codes (0
clean, 1 errors, 2 blocking errors). `--plugin NAME` is accepted (repeatable) and loads NAME
too; naming this plugin is harmless.
"""

import importlib
import sys
from collections.abc import Sequence
from typing import Final, TextIO

from mypy import build, util
from mypy.errors import CompileError
from mypy.fscache import FileSystemCache
from mypy.main import process_options, show_messages
from mypy.options import Options
from mypy.plugin import Plugin
from mypy.version import __version__ as mypy_version

PLUGIN: Final = "spakky_saga_mypy"
_FLAG: Final = "--plugin"


def split_plugin_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate `--plugin NAME` / `--plugin=NAME` from the arguments mypy understands."""
    plugins: list[str] = []
    rest: list[str] = []
    arguments = iter(argv)
    for argument in arguments:
        if argument == _FLAG:
            name = next(arguments, None)
            if name is None:
                raise SystemExit(f"{_FLAG} needs a plugin name, e.g. {_FLAG} {PLUGIN}")
            plugins.append(name)
        elif argument.startswith(_FLAG + "="):
            plugins.append(argument.removeprefix(_FLAG + "="))
        else:
            rest.append(argument)
    return plugins, rest


def missing_plugins(options: Options, requested: Sequence[str]) -> list[str]:
    """Ours and the requested plugins that mypy will not load from its config, each once.

    mypy loads `options.plugins` only when a config file was found, so these are handed to
    the build as extra plugins instead.
    """
    configured = options.plugins if options.config_file else []
    missing: list[str] = []
    for name in (PLUGIN, *requested):
        if name not in configured and name not in missing:
            missing.append(name)
    return missing


def _load(name: str, options: Options) -> Plugin:
    module_name, _, function = name.partition(":")
    entry = getattr(importlib.import_module(module_name), function or "plugin")
    plugin_class: type[Plugin] = entry(mypy_version)
    return plugin_class(options)


def run(argv: Sequence[str], stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """Run mypy on `argv` with the plugin; return mypy's exit code."""
    requested, arguments = split_plugin_flags(argv)
    fscache = FileSystemCache()
    sources, options = process_options(arguments, stdout=stdout, stderr=stderr, fscache=fscache)
    options.fast_exit = False
    extra = [_load(name, options) for name in missing_plugins(options, requested)]
    formatter = util.FancyFormatter(
        stdout, stderr, options.hide_error_codes, hide_success=bool(options.output)
    )
    messages: list[str] = []

    def flush_errors(filename: str | None, new_messages: list[str], serious: bool) -> None:
        if options.pretty:
            new_messages = formatter.fit_in_terminal(new_messages)
        messages.extend(new_messages)
        show_messages(new_messages, stderr if serious else stdout, formatter, options)

    blockers = False
    try:
        result = build.build(
            sources, options, None, flush_errors, fscache, stdout, stderr, extra_plugins=extra
        )
        result.manager.metastore.close()
    except CompileError:
        blockers = True
    return _summarize(
        messages,
        blockers,
        n_sources=len(sources),
        options=options,
        formatter=formatter,
        stdout=stdout,
    )


def _summarize(
    messages: list[str],
    blockers: bool,
    *,
    n_sources: int,
    options: Options,
    formatter: util.FancyFormatter,
    stdout: TextIO,
) -> int:
    """mypy's summary line and exit code (0 clean, 1 errors, 2 blocking errors)."""
    n_errors, n_notes, n_files = util.count_stats(messages)
    code = 0
    if messages and n_notes < len(messages):
        code = 2 if blockers else 1
    if options.error_summary:
        if n_errors:
            summary = formatter.format_error(
                n_errors, n_files, n_sources, blockers=blockers, use_color=options.color_output
            )
            stdout.write(summary + "\n")
        elif not messages or n_notes == len(messages):
            stdout.write(formatter.format_success(n_sources, options.color_output) + "\n")
        stdout.flush()
    return code


def main() -> None:
    """Console entry point."""
    sys.exit(run(sys.argv[1:]))
