"""``tx report``: the per-pull-request earnings report (see ``token_exchange.report`` and docs/ci.md)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer

from token_exchange.cli import output as out
from token_exchange.cli.common import Json, state
from token_exchange.errors import UserError


class Format(StrEnum):
    markdown = "markdown"
    json = "json"
    text = "text"



def report(base: Annotated[str, typer.Option("--base", help="Base revision (the PR's target, e.g. origin/main).")],
           head: Annotated[str, typer.Option("--head", help="Head revision (the PR's last commit).")] = "HEAD",
           format: Annotated[Format, typer.Option("--format", help="markdown (a PR comment), json or text.")
                             ] = Format.text,
           config_path: Annotated[str, typer.Option("--config-path", help="Config path inside the repository, read "
                                                    "from git at the base revision.")] = ".exchange/config.toml",
           config_rev: Annotated[Optional[str], typer.Option("--config-rev", help="Read the rules at this revision "
                                                             "instead of the base (trust it first!).")] = None,
           project: Annotated[Optional[str], typer.Option("--project", help="Project name for contracts (default: "
                                                          "config, else origin's repository name).")] = None,
           repo: Annotated[Optional[Path], typer.Option("--repo", help="Repository (default: the current "
                                                        "directory).")] = None,
           ledger: Annotated[bool, typer.Option("--ledger/--no-ledger", help="Show what the ledger paid beside "
                                                "what the rules pay, when a ledger exists.")] = True,
           output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file.")] = None,
           as_json: Json = False) -> None:
    """Earnings of the commits in merge-base(BASE, HEAD)..HEAD, under the BASE revision's rules."""
    from token_exchange.report import build, render

    where = (repo or Path.cwd()).absolute()
    fmt_ = "json" if as_json else format.value
    home = _home(where, state.home)
    if output is not None and home is not None and output.resolve().is_relative_to(home.resolve()):
        raise UserError(f"--output {output} is inside the exchange home {home} (the ledger, its index and config "
                        "live there); write the report somewhere else")
    r = build.build(where, base, head, config_path=config_path, config_rev=config_rev, project=project,
                    home=home if ledger else None, use_ledger=ledger)
    if fmt_ == "json":
        text = out.dumps(render.to_json(r)) + "\n"
    elif fmt_ == "markdown":
        text = render.render_markdown(r)
    else:
        text = render.render_text(r)
    if output is not None:
        try:
            output.write_text(text, "utf-8")
        except OSError as e:
            raise UserError(f"cannot write {output}: {e.strerror}") from None
        out.message(f"report written to {output} ({len(text.encode())} bytes, {len(r.commits)} commits)")
    else:
        sys.stdout.write(text)


def _home(repo: Path, home: Path | None) -> Path | None:
    """The exchange home (--home, $TOKEN_EXCHANGE_HOME, else REPO/.exchange); None when there is none."""
    from token_exchange.errors import UserError
    from token_exchange.services.home import find_home

    try:
        return find_home(home, cwd=repo)
    except UserError:
        return None


def register(app: typer.Typer) -> None:
    app.command("report")(report)
