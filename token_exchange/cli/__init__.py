"""``tx``: one typer app; each command group lives in its own module and registers itself here.

The CLI only parses, calls the services and prints.  Conventions (README): results on stdout, messages
on stderr, ``--json`` prints one JSON document, exit 0 done / 1 refused or user error / 2 usage error / 3 a bug.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Optional

import typer

from token_exchange import __version__
from token_exchange.cli import corrections, hooks, ledger, mcp, report, settle, sim, spend, sync
from token_exchange.cli.common import state
from token_exchange.cli.output import run_app

CONTEXT = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(help="token-exchange: a token economy for AI coding agents.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, context_settings=CONTEXT)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"tx {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(home: Annotated[Optional[Path], typer.Option(
              "--home", help="Exchange home (default: $TOKEN_EXCHANGE_HOME, else .exchange/ of this repository).")
          ] = None,
          debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (for bug reports).")
                           ] = False,
          version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", callback=_version,
                                                is_eager=True)] = False) -> None:
    state.home = home
    state.debug = debug or bool(os.environ.get("TOKEN_EXCHANGE_DEBUG"))


for _module in (ledger, spend, hooks, sync, settle, report, sim, mcp, corrections):
    _module.register(app)

from token_exchange.cli import meter as _meter  # noqa: E402  (tx meter, tx guard: issue 18)

_meter.register(app)

from token_exchange.cli import migrate as _migrate  # noqa: E402  (tx migrate: issue 16)

_migrate.register(app)


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``tx`` with our exit codes and one-line errors; returns the exit status."""
    state.reset()
    return run_app(app, "tx", list(sys.argv[1:] if argv is None else argv), state)


def main() -> None:
    raise SystemExit(run())
