"""Where bd keeps a project's data: the beads directory bd itself resolves, and its export.

bd does not always use ``<git toplevel>/.beads`` (``internal/beads/beads.go`` v1.0.5,
``FindDatabasePath`` / ``findDatabaseInTree`` / ``FollowRedirect``):

1. ``$BEADS_DIR`` (its ``redirect`` followed) when it holds a database; otherwise bd searches on;
2. ``$BEADS_DB`` (deprecated): that directory, or the one holding that file;
3. ``.beads`` in the working directory (unless it is a linked worktree's root), then, in a linked
   worktree, the worktree's ``.beads/redirect``, its own ``.beads`` only if it holds a database,
   else the MAIN repository's ``.beads`` (via git's common dir); then ``.beads`` in each parent up
   to the repository root.  Each ``.beads`` may hold a one-line ``redirect`` to another one
   (relative to the project root; one level, never a chain).

A beads dir "holds a database" when ``embeddeddolt/`` or ``dolt/`` (or, before 1.0, a ``*.db``)
is in it (``findDatabaseInBeadsDir`` / ``hasBeadsDatabase``).  bd runs its hooks from
``<resolved dir>/hooks`` (``cmd/bd/main.go``) and exports it to them as ``$BEADS_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from token_exchange.errors import UserError

EXPORT_NAME = "issues.jsonl"
DATABASE_DIRS = ("embeddeddolt", "dolt")
REDIRECT = "redirect"


class BeadsDir(NamedTuple):
    path: Path
    database: bool  # holds bd's database (else only tracked files, e.g. the export)
    how: str  # how it was found, for messages

    @property
    def export(self) -> Path:
        return self.path / EXPORT_NAME

    @property
    def hooks(self) -> Path:
        return self.path / "hooks"


def _canon(path: str | Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(str(path)))))


def has_database(beads_dir: Path) -> bool:
    if any((beads_dir / name).is_dir() for name in DATABASE_DIRS):
        return True
    try:
        names = os.listdir(beads_dir)
    except OSError:
        return False
    return any(n.endswith(".db") and ".backup" not in n and n != "vc.db" for n in names)


def database_path(beads_dir: Path) -> Path | None:
    """bd's data inside a beads dir (the directory or legacy file), if any."""
    for name in DATABASE_DIRS:
        if (beads_dir / name).is_dir():
            return beads_dir / name
    dbs = sorted(p for p in beads_dir.glob("*.db") if ".backup" not in p.name and p.name != "vc.db")
    return dbs[0] if dbs else None


def follow_redirect(beads_dir: Path) -> Path:
    """beads.go FollowRedirect: the first non-comment line of ``redirect``, relative to the project root."""
    try:
        text = (beads_dir / REDIRECT).read_text("utf-8", "replace")
    except OSError:
        return beads_dir
    target = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")), "")
    if not target:
        return beads_dir
    resolved = _canon(target if os.path.isabs(target) else beads_dir.parent / target)
    return resolved if resolved.is_dir() else beads_dir


def _layout(cwd: Path) -> tuple[Path | None, Path | None, bool]:
    """(work tree root, main repository root, is a linked worktree); (None, None, False) outside git."""
    from token_exchange import git

    try:
        w = git.where(cwd)
    except (OSError, UserError):
        return None, None, False
    if w is None:
        return None, None, False
    linked = _canon(w.git_dir) != _canon(w.common_dir)
    main = _canon(w.common_dir).parent if w.common_dir.name == ".git" else None
    return (_canon(w.toplevel) if w.toplevel else None), main, linked


def _in_tree(cwd: Path) -> BeadsDir | None:
    """findDatabaseInTree: the first beads dir holding a database, searched as bd searches."""
    top, main, linked = _layout(cwd)
    if not (linked and cwd == top):
        cand = cwd / ".beads"
        if cand.is_dir():
            target = follow_redirect(cand)
            if has_database(target):
                return BeadsDir(target, True, f".beads in {cwd}" if target == cand else f"the redirect in {cand}")
    boundary = top
    if linked and top is not None:
        own = top / ".beads"
        if (own / REDIRECT).exists():
            target = follow_redirect(own)
            if has_database(target):
                return BeadsDir(target, True, f"the redirect in {own}")
        if own.is_dir() and has_database(own):
            return BeadsDir(own, True, "this worktree's .beads")
        if main is not None and (main / ".beads").is_dir():
            shared = follow_redirect(main / ".beads")
            if has_database(shared):
                return BeadsDir(shared, True, f"the main repository's .beads ({main}; this is a git worktree)")
        boundary = main or top
    d = cwd
    while True:
        cand = d / ".beads"
        if cand.is_dir():
            target = follow_redirect(cand)
            if has_database(target):
                how = f".beads in {d}" if target == cand else f"the redirect in {cand}"
                return BeadsDir(target, True, how)
        if d.parent == d or (boundary is not None and d == boundary):
            return None
        d = d.parent


def resolve(cwd: Path | None = None) -> BeadsDir | None:
    """The beads dir bd would use from ``cwd``; without any database, the nearest beads dir (an export-only
    checkout: ``$BEADS_DIR``, else ``.beads`` in ``cwd`` or a parent, its redirect followed)."""
    here = _canon(cwd or Path.cwd())
    env = os.environ.get("BEADS_DIR", "").strip()
    if env:
        d = follow_redirect(_canon(env))
        if has_database(d):
            return BeadsDir(d, True, "$BEADS_DIR")
    env_db = os.environ.get("BEADS_DB", "").strip()
    if env_db:
        p = _canon(env_db)
        return BeadsDir(p if p.is_dir() else p.parent, True, "$BEADS_DB")
    found = _in_tree(here)
    if found is not None:
        return found
    if env:
        d = follow_redirect(_canon(env))
        return BeadsDir(d, False, "$BEADS_DIR")
    for d in (here, *here.parents):
        if (d / ".beads").is_dir():
            return BeadsDir(follow_redirect(d / ".beads"), False, f".beads in {d}")
    return None


def newest_change(path: Path, limit: int = 20_000) -> float:
    """The latest modification time of ``path`` and (a bounded walk of) what is under it; 0 if absent."""
    try:
        newest = path.stat().st_mtime
    except OSError:
        return 0.0
    if not path.is_dir():
        return newest
    seen = 0
    stack = [path]
    while stack and seen < limit:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            seen += 1
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            newest = max(newest, st.st_mtime)
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
    return newest
