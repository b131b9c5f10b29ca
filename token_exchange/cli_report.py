"""`tx report`: the per-pull-request earnings report (see ``report.py`` and docs/ci.md).

CI runs it over thousands of commits, so it is parsed with ``argparse`` and reached without building
the typer app (``entry.tx`` routes ``tx report ...`` here directly: typer and the other commands'
imports cost more than git's walk of a large range).  ``tx --home H report ...`` goes through typer,
which passes the arguments on unchanged.  Same conventions as every command: results on stdout,
messages on stderr, exit 0 / 1 (user error, with ``{"error": ...}`` for --json) / 2 (usage).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not `typing`'s: nothing is imported before git starts (see _start_early)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from pathlib import Path
    from typing import Any
FORMATS = ("markdown", "json", "text")
SUMMARY = "Earnings of the commits in merge-base(BASE, HEAD)..HEAD, under the BASE revision's rules."


def parser() -> argparse.ArgumentParser:
    import argparse
    from pathlib import Path

    p = argparse.ArgumentParser(prog="tx report", description=SUMMARY, allow_abbrev=False)
    p.add_argument("--base", required=True, help="Base revision (the PR's target, e.g. origin/main).")
    p.add_argument("--head", default="HEAD", help="Head revision (the PR's last commit). Default: HEAD.")
    p.add_argument("--format", choices=FORMATS, default="text", help="markdown, json or text. Default: text.")
    p.add_argument("--config-path", default=".exchange/config.toml",
                   help="Config path inside the repository, read from git at the base revision.")
    p.add_argument("--config-rev", help="Read the rules at this revision instead of the base (trust it first!).")
    p.add_argument("--project", help="Project name for contracts (default: config, else origin's repo name).")
    p.add_argument("--repo", type=Path, help="Repository (default: current directory).")
    p.add_argument("--ledger", action=argparse.BooleanOptionalAction, default=True,
                   help="Show paid/unpaid from the ledger when one exists. Default: --ledger.")
    p.add_argument("--reward-ids", action=argparse.BooleanOptionalAction, default=None,
                   help="Compute reward ids (default: for json, or with a ledger).")
    p.add_argument("--output", "-o", type=Path, help="Write to this file.")
    p.add_argument("--json", dest="as_json", action="store_true", help="Same as --format json.")
    p.add_argument("--home", type=Path, help="Exchange home (default: $TOKEN_EXCHANGE_HOME, else .exchange/).")
    p.add_argument("--debug", action="store_true", help="Show the traceback of an error.")
    return p


def main(argv: Sequence[str], home: Path | None = None) -> int:
    """Parse, build, print; the exit status (argparse exits 2 itself on a usage error)."""
    early = _start_early(argv)  # git's walk of the range, before this process imports anything more
    from token_exchange import output as out
    from token_exchange.errors import UserError

    try:
        args = parser().parse_args(list(argv))
    except BaseException:
        if early is not None:
            from token_exchange import history

            history.abandon(early[1])
        raise
    try:
        run(args, args.home or home, early)
    except UserError as e:
        if args.debug:
            raise
        return out.error("tx", str(e), e.exit_code, args.as_json)
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        if args.debug:
            raise
        return out.error("tx", f"{e.strerror or e}: {getattr(e, 'filename', '') or ''}", 1, args.as_json)
    return 0


def _start_early(argv: Sequence[str]) -> tuple[tuple[str, str, str], Any] | None:
    """Start the range's ``git log`` from a quick look at ``--base/--head/--repo``; ``run`` uses it only if
    argparse reads the same values (it is the authority), else stops it."""
    seen = {"--base": "", "--head": "HEAD", "--repo": ""}
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if arg in ("-h", "--help"):
            return None
        if name in seen:
            value = value if eq else next(it, "")
            if not value or value.startswith("-"):
                return None
            seen[name] = value
    if not seen["--base"]:
        return None
    from token_exchange import history

    try:
        return ((seen["--base"], seen["--head"], seen["--repo"]),
                history.start_log(seen["--repo"] or ".", seen["--base"], seen["--head"]))
    except Exception:  # noqa: BLE001 - an optimisation only: run() starts it again and reports errors
        return None


def run(args: argparse.Namespace, home: Path | None, early: tuple[tuple[str, str, str], Any] | None = None) -> None:
    from pathlib import Path

    from token_exchange import history

    where = (args.repo or Path.cwd()).absolute()
    started = None
    if early is not None:
        if early[0] == (args.base, args.head, str(args.repo) if args.repo else ""):
            started = early[1]
        else:
            history.abandon(early[1])
    begun = history.begin(where, args.base, args.head, started)  # git walks the range while the rest imports
    try:
        from token_exchange import output as out
        from token_exchange import report as rep
        from token_exchange.errors import UserError
    except BaseException:
        history.abandon(begun.started)
        raise

    fmt_ = "json" if args.as_json else args.format
    r = rep.build(where, args.base, args.head, config_path=args.config_path, config_rev=args.config_rev,
                  project=args.project, home=_home(where, home) if args.ledger else None, use_ledger=args.ledger,
                  want_ids=(fmt_ == "json") if args.reward_ids is None else args.reward_ids, begun=begun)
    if fmt_ == "json":
        text = out.dumps(rep.to_json(r)) + "\n"
    elif fmt_ == "markdown":
        text = rep.render_markdown(r)
    else:
        text = rep.render_text(r)
    if args.output is not None:
        try:
            args.output.write_text(text, "utf-8")
        except OSError as e:
            raise UserError(f"cannot write {args.output}: {e.strerror}") from None
        out.message(f"report written to {args.output} ({len(text.encode())} bytes, {len(r.commits)} commits)")
    else:
        sys.stdout.write(text)


def _home(repo: Path, home: Path | None) -> Path | None:
    """The exchange home (--home, $TOKEN_EXCHANGE_HOME, else REPO/.exchange); None when there is none."""
    from token_exchange.errors import UserError
    from token_exchange.gitutil import find_home

    try:
        return find_home(home, cwd=repo)
    except UserError:
        return None
