"""CLI conventions shared by ``tx`` and ``tx-bd``.

Results go to stdout, messages to stderr.  ``--json`` prints exactly one JSON
document whose amounts are exact decimal numbers (``178.2``), never float noise.
Exit codes: 0 done, 1 refused or user error, 2 usage error, 3 an unexpected error (a bug).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol

from token_exchange.amounts import Units, to_decimal

_SURROGATES = re.compile("[\ud800-\udfff]")
INTERNAL_ERROR = 3  # an unexpected error: a bug (pre-commit's code for the same)


def dumps(data: Any) -> str:
    """One indented JSON document; a Decimal is written as its exact digits (``178.2``), never a float.

    orjson (Rust) with ``orjson.Fragment`` for exact decimals: a 10,000-commit report encodes in
    ~50 ms, where simplejson took ~250 ms."""
    import orjson

    option = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    try:
        return orjson.dumps(data, default=_default, option=option).decode("utf-8")
    except orjson.JSONEncodeError:
        # Text from hostile input (an argument or path given as undecodable bytes) holds lone surrogates, which
        # UTF-8 JSON cannot carry: each becomes U+FFFD, the rest of the document as it was.
        return orjson.dumps(_no_surrogates(data), default=lambda obj: _no_surrogates(_default(obj)),
                            option=option).decode("utf-8")


def _no_surrogates(obj: Any) -> Any:
    if isinstance(obj, str):
        return _SURROGATES.sub("\ufffd", obj)
    if isinstance(obj, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_surrogates(v) for v in obj]
    return obj


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise TypeError(f"cannot encode {obj} as a JSON number")
        import orjson

        return orjson.Fragment(format(obj, "f"))
    for name in ("for_json", "to_json"):
        if hasattr(obj, name):
            return getattr(obj, name)()
    if hasattr(obj, "_asdict"):  # a NamedTuple: an object, as before
        return obj._asdict()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def emit_json(data: Any) -> None:
    sys.stdout.write(dumps(data) + "\n")


def amount(units: Units) -> Decimal:
    return to_decimal(units)


def message(text: str) -> None:
    """A message for people: stderr, so stdout stays a clean result."""
    sys.stderr.write(text + "\n")


def console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(soft_wrap=False)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
          right: Sequence[str] = (), caption: str | None = None) -> None:
    """A rich table on stdout (plain when piped)."""
    from rich.table import Table

    t = Table(title=title, caption=caption)
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left")
    for row in rows:
        t.add_row(*(str(c) for c in row))
    console().print(t)


def _click_exceptions() -> Any:
    """typer >= 0.20 vendors click as ``typer._click``; older typer uses click itself."""
    import importlib

    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # pragma: no cover - depends on the installed typer
        return importlib.import_module("click.exceptions")


def error(prog: str, msg: str, code: int, want_json: bool) -> int:
    """One line on stderr (and, for --json, an {"error": ...} document on stdout); returns ``code``."""
    msg = " ".join(msg.split()) or "failed"
    sys.stderr.write(f"{prog}: error: {msg}\n")
    if want_json and code in (1, INTERNAL_ERROR):
        emit_json({"error": msg})
    return code


@functools.cache
def command(app: Any) -> Any:
    """The click command of a typer app, built once per process: typer rebuilds it (every option of every
    command, from the signatures) on each call, ~0.2 s here, which an in-process caller running many
    commands (the tests, an integration) paid every time."""
    import typer.main

    return typer.main.get_command(app)


class _State(Protocol):
    debug: bool
    json: bool


def run_app(app: Any, prog: str, args: list[str], state: _State) -> int:
    """Run a typer app with our exit codes and one-line errors (``--debug`` re-raises): the one error
    handler of ``tx`` and ``tx-bd``."""
    import typer

    from token_exchange.errors import UserError

    exc = _click_exceptions()

    def fail(msg: str, code: int) -> int:
        return error(prog, msg, code, state.json)

    try:
        rv = command(app)(args=args, prog_name=prog, standalone_mode=False)
    except typer.Exit as e:
        return int(e.exit_code)
    except exc.UsageError as e:
        e.show()
        return 2
    except typer.Abort:
        return fail("aborted", 1)
    except exc.ClickException as e:
        return fail(e.format_message(), 1)
    except UserError as e:
        if state.debug:
            raise
        return fail(str(e), e.exit_code)
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        if state.debug:
            raise
        return fail(f"{e.strerror or e}: {getattr(e, 'filename', '') or ''}", 1)
    except RecursionError:
        return fail("input nested too deeply", 1)
    except ValueError as e:  # a path argument with a NUL byte (only an in-process caller can pass one)
        if "null byte" not in str(e) or state.debug:
            raise
        return fail("an argument contains a NUL byte", 2)
    except Exception as e:  # noqa: BLE001 - the last resort: one line, never a traceback (--debug shows it)
        if state.debug:
            raise
        return fail(f"unexpected {type(e).__name__}: {str(e)[:300]} (a bug: rerun with --debug and report it)",
                    INTERNAL_ERROR)
    # With standalone_mode=False, click returns the code of a typer.Exit instead of raising it.
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
