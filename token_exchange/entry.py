"""Console entry points (``tx``, ``token-exchange``, ``python -m token_exchange``).

``tx report`` goes straight to its argparse front end: CI runs it over whole pull requests, and
importing typer and building every command first would cost it more than git's own walk of the range.
Everything else is the typer app in ``cli``.
"""

from __future__ import annotations

import sys


def tx() -> None:
    if sys.argv[1:2] == ["report"]:
        from token_exchange.cli_report import main

        raise SystemExit(main(sys.argv[2:]))
    from token_exchange.cli import main as cli_main

    cli_main()
