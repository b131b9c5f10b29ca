"""`tx report`: the per-pull-request earnings report (see ``report.py`` and docs/ci.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

FORMATS = ("markdown", "json", "text")


def register(app: typer.Typer) -> None:
    """Add `tx report` to `tx`."""

    @app.command("report")
    def report_cmd(
        base: Annotated[str, typer.Option("--base", help="Base revision (the PR's target, e.g. origin/main).")],
        head: Annotated[str, typer.Option("--head", help="Head revision (the PR's last commit).")] = "HEAD",
        format: Annotated[str, typer.Option("--format", help="markdown, json or text.")] = "text",
        config_path: Annotated[str, typer.Option("--config-path", help="Config path inside the repository, "
                                                 "read from git at the base revision.")] = ".exchange/config.toml",
        config_rev: Annotated[Optional[str], typer.Option(
            "--config-rev", help="Read the rules at this revision instead of the base (trust it first!).")] = None,
        project: Annotated[Optional[str], typer.Option(
            "--project", help="Project name for contracts (default: config, else origin's repo name).")] = None,
        repo: Annotated[Optional[Path], typer.Option("--repo", help="Repository (default: current directory).")]
        = None,
        ledger: Annotated[bool, typer.Option("--ledger/--no-ledger",
                                             help="Show paid/unpaid from the ledger when one exists.")] = True,
        reward_ids: Annotated[Optional[bool], typer.Option(
            "--reward-ids/--no-reward-ids", help="Compute reward ids (default: for json, or with a ledger).")]
        = None,
        output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    ) -> None:
        """Earnings of the commits in merge-base(BASE, HEAD)..HEAD, under the BASE revision's rules."""
        from token_exchange import output as out
        from token_exchange import report as rep
        from token_exchange.errors import UserError

        fmt_ = "json" if as_json else format
        if fmt_ not in FORMATS:
            raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
        where = (repo or Path.cwd()).absolute()
        home = _home(where)
        r = rep.build(where, base, head, config_path=config_path, config_rev=config_rev, project=project,
                      home=home, use_ledger=ledger, want_ids=(fmt_ == "json") if reward_ids is None else reward_ids)
        if fmt_ == "json":
            text = out.dumps(rep.to_json(r)) + "\n"
        elif fmt_ == "markdown":
            text = rep.render_markdown(r)
        else:
            text = rep.render_text(r)
        if output is not None:
            try:
                output.write_text(text, "utf-8")
            except OSError as e:
                raise UserError(f"cannot write {output}: {e.strerror}") from None
            out.message(f"report written to {output} ({len(text.encode())} bytes, {len(r.commits)} commits)")
        else:
            import sys

            sys.stdout.write(text)


def _home(repo: Path) -> Path | None:
    """The exchange home (--home, $TOKEN_EXCHANGE_HOME, else REPO/.exchange); None when there is none."""
    from token_exchange import cli
    from token_exchange.errors import UserError
    from token_exchange.exchange import find_home

    try:
        return find_home(cli._state.get("home"), cwd=repo)
    except UserError:
        return None
