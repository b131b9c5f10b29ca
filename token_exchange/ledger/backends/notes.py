"""The git-notes journal: transactions as JSON lines in git notes, shared through any git remote.

Layout (docs/notes.md):

* Notes live under ``cfg.notes_ref`` (default ``refs/notes/token-exchange``) in the repository that holds
  the home (``.exchange/`` at its root; a home elsewhere uses the repository of the current directory).
* Every record is a line in the note of an *anchor*: a blob whose text is a constant plus the UTC hour
  of the record.  Its id is the same in every clone, so two clones writing in the same hour write the
  same note and merge by line union; hourly anchors keep each note small.  The first record of an hour
  also stores the anchor blob in the notes tree under ``token-exchange-anchors/`` (a non-note entry git
  keeps), so anchors travel with fetch/push and survive gc and ``git notes prune``.  Records are never
  attached to commits: a rebased or garbage-collected commit can never take a payment with it (notes of
  older ledgers that did are still read).
* One record per line: compact JSON with sorted keys; ``git notes merge -s cat_sort_uniq`` (line union)
  never loses one, and a record seen twice is deduplicated.
* No hash chain (union merges reorder records): each record carries the hash of its own content; the
  notes ref's commits hash every tree and blob, and every clone that synced holds the history.

Position = the notes ref's commit.  ``read_from(pos)`` diffs the notes trees between ``pos`` (or, after a
merge, the merge base) and the tip and parses only the lines each changed note gained.

Writing goes through git's own plumbing (``token_exchange.git``): a batch is ONE commit made by
``git fast-import`` from the tip the index has read, which git refuses to move the ref to unless the
ref still points there (a compare-and-swap; a lost race is retried).  A crash leaves at most objects
nobody references; the ref names the old tree or the complete new one.  ``tx sync`` fetches and pushes
through ``git.remote`` (never forced; a rejected push is told from a failure).

Why over 400 lines: one backend is one file behind the Journal protocol; reading, writing and syncing
notes share the layout above and belong together.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from token_exchange import git
from token_exchange.errors import UserError
from token_exchange.ledger.merge import settle
from token_exchange.ledger.protocols import Chunk, Index, Tail
from token_exchange.ledger.timestamps import ts_micros
from token_exchange.ledger.txn import Txn, make_txn

if TYPE_CHECKING:  # pragma: no cover
    from token_exchange.ledger.ledger import Ledger

ANCHOR_TEXT = "token-exchange ledger anchor v1\nhour: {hour}\n"
ANCHOR_DIR = "token-exchange-anchors"
BLOB_MODE = "100644"
DEFAULT_IDENT = ("token-exchange", "token-exchange@localhost")
HEX_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
MAX_NOTE = 64 << 20


def record_line(t: Txn) -> str:
    """One record: compact JSON, sorted keys, one line (JSON escapes every newline)."""
    return json.dumps(t.to_json(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def anchor_text(ts: str) -> bytes:
    return ANCHOR_TEXT.format(hour=ts[:13] or "unknown").encode()


def anchor_path(hour: str) -> str:
    """Where the anchor blob of ``hour`` (``2026-01-05T13``) is kept in the notes tree."""
    year, _, rest = hour.partition("-")
    return f"{ANCHOR_DIR}/{year or 'unknown'}/{rest or 'unknown'}"


def ident_env() -> dict[str, str]:
    """Who writes ledger commits: the committer git would use, else a fixed identity (CI has none)."""
    name = os.environ.get("GIT_COMMITTER_NAME") or DEFAULT_IDENT[0]
    email = os.environ.get("GIT_COMMITTER_EMAIL") or DEFAULT_IDENT[1]
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email}


# --- the repository ---------------------------------------------------------------------------------
class Repo(NamedTuple):
    """The repository a notes ledger lives in; git runs in its common git dir (never anyone's GIT_DIR)."""

    common_dir: Path

    def run(self, *args: str, input: bytes | None = None, check: bool = True,
            env: dict[str, str] | None = None) -> Any:
        return git.run(*args, repo=self.common_dir, input=input, check=check, env=env)

    def out(self, *args: str, check: bool = True) -> str:
        return git.decode(self.run(*args, check=check).stdout).strip()

    def ref(self, ref: str) -> str:
        """The commit ``ref`` names, "" when there is none."""
        return self.out("rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False)


def resolve_repo(home: Path) -> Repo:
    """The repository holding ``home`` (``.exchange/`` at its root), else the current directory's."""
    for where in ((home.parent if home.name == ".exchange" else home), None):
        if where is not None and not where.is_dir():
            continue
        w = git.where(where)
        if w is not None:
            return Repo(w.common_dir)
    raise UserError(f"the notes backend needs a git repository: {home} is not inside one and neither is the "
                    "current directory (run inside the repository, or use --backend toml)")


@dataclass
class Invalid:
    note: str
    reason: str


@dataclass
class Change:
    path: str
    new: str
    old: str = ""


@dataclass
class _Parsed:
    txns: list[Txn] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)


class NotesJournal:
    """Journal in git notes; position = the notes ref's commit id ("" before the first write)."""

    name = "notes"
    MAX_CAS_RETRIES = 20

    def __init__(self, home: Path, cfg: Any) -> None:
        self.home = home
        self.cfg = cfg
        self.ref: str = cfg.notes_ref
        self._repo: Repo | None = None
        self._known: str | None = None  # the position the index was last brought to through us
        self.invalid: list[Invalid] = []
        self.conflicts: list[str] = []  # ids with differing records from two clones (read_all settles them)

    @property
    def repo(self) -> Repo:
        if self._repo is None:
            self._repo = resolve_repo(self.home)
        return self._repo

    def lock_path(self) -> Path:
        # In the repository (not the home): every home and worktree sharing these notes serialises here.
        return self.repo.common_dir / "token-exchange.lock"

    def end(self) -> str:
        pos = self.repo.ref(self.ref)
        self._known = pos
        return pos

    def set_aside(self, tail: Tail) -> Path:
        """Never needed: a notes write is one compare-and-swap of the ref, so there is no tail."""
        raise UserError("git notes have no tail to set aside")

    def verify_position(self, position: str, last_hash: str) -> str:
        if self.is_behind(position, self.end()):
            return ""
        return (f"{self.ref} no longer contains the notes commit the index has read ({position[:12]}): the "
                "notes were rewritten")

    def setup(self) -> dict[str, Any]:
        return configure_repo(self.home, self.cfg)

    def existing(self) -> str | None:
        try:
            return f"git notes {self.ref}" if self.repo.ref(self.ref) else None
        except UserError:
            return None

    def seal(self, txns: list[Txn], last_hash: str) -> list[Txn]:
        """Each record carries the hash of its own content (no chain: union merges reorder records)."""
        return [t._replace(prev="", hash=t._replace(prev="").compute_hash()) for t in txns]

    def accept(self, idx: Index, txns: list[Txn]) -> tuple[list[Txn], bool]:
        return settle(idx.get, txns)

    def link_problems(self, txns: list[Txn]) -> list[str]:
        """None: two clones' records of one id are settled the same way everywhere (``merge.settle``:
        the earliest wins), so a merged ledger is consistent; ``read_all`` returns the winners."""
        return []

    def link_notes(self) -> list[str]:
        return [f"{i}: two clones wrote different records of this id; the earliest stands on every replica"
                for i in self.conflicts]

    def new_records(self, old: str, new: str) -> list[Txn]:
        return self._parse(self.changes(old, new)).txns

    def sync(self, ledger: Ledger, remote: str) -> SyncResult:
        return sync_notes(ledger, self, remote)

    def chunks(self, position: str = "") -> Iterator[Chunk]:
        chunk = self.read_from(position)
        if not position:  # a rebuild: settle conflicting records the way every replica does
            yield Chunk(settle(lambda _id: None, chunk.txns)[0], chunk.position)
        else:
            yield chunk

    def is_behind(self, position: str, end: str) -> bool:
        """True when ``position`` is an ancestor of ``end`` (the index just has not caught up)."""
        if not position:
            return True
        if not end:
            return False
        return git.is_ancestor(position, end, self.repo.common_dir)

    # --- reading ---------------------------------------------------------------------------------
    def changes(self, old: str, new: str) -> list[Change]:
        """Notes added or modified between two notes commits (everything when ``old`` is "")."""
        if not new:
            return []
        base = self.repo.out("merge-base", old, new, check=False) if old else ""
        if base == new:
            return []
        if not base:
            return self._all_notes(new)
        raw = self.repo.run("diff-tree", "-r", "-z", "--no-renames", "--no-commit-id", base, new).stdout
        out: list[Change] = []
        gone: dict[str, str] = {}  # object -> its old note blob, for notes that moved (fanout change)
        parts = raw.split(b"\0")
        for i in range(0, len(parts) - 1, 2):
            meta = parts[i].decode("ascii", "replace")
            path = parts[i + 1].decode("utf-8", "surrogateescape")
            fields = meta[1:].split() if meta.startswith(":") else []
            if len(fields) < 5 or not is_note_path(path):
                continue
            mode_old, mode_new, oid_old, oid_new, status = fields[:5]
            if status.startswith("D"):
                if mode_old == BLOB_MODE:
                    gone[path.replace("/", "")] = oid_old
                continue
            if mode_new != BLOB_MODE:
                continue
            added = set(oid_old) == {"0"} or status.startswith("A")
            out.append(Change(path, oid_new, "" if added else oid_old))
        for c in out:
            if not c.old:
                c.old = gone.get(c.path.replace("/", ""), "")
        return out

    def _all_notes(self, commit: str) -> list[Change]:
        raw = self.repo.run("ls-tree", "-r", "-z", "--full-tree", commit).stdout
        out = []
        for item in raw.split(b"\0"):
            meta, _, path = item.partition(b"\t")
            fields = meta.decode("ascii", "replace").split()
            name = path.decode("utf-8", "surrogateescape")
            if len(fields) == 3 and fields[0] == BLOB_MODE and fields[1] == "blob" and is_note_path(name):
                out.append(Change(name, fields[2]))
        return out

    def _read_blobs(self, oids: set[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        with git.Batch(self.repo.common_dir) as batch:
            for oid in sorted(oids):
                obj = batch.get(oid, limit=MAX_NOTE, what=f"note {oid[:12]}")
                if obj is not None and obj[0] == "blob":
                    found[oid] = obj[1]
        return found

    def _parse(self, changes: list[Change]) -> _Parsed:
        blobs = self._read_blobs({c.new for c in changes} | {c.old for c in changes if c.old})
        result = _Parsed()
        seen: set[str] = set()
        for c in changes:
            target = c.path.replace("/", "")
            old = set(blobs.get(c.old, b"").split(b"\n")) if c.old else set()
            for raw in blobs.get(c.new, b"").split(b"\n"):
                line = raw.strip()
                if not line or line in old:
                    continue
                try:
                    t = parse_record(line)
                except (ValueError, KeyError, TypeError, UserError, RecursionError) as e:
                    result.invalid.append(Invalid(target, " ".join(str(e).split())[:200]))
                    continue
                if t.hash in seen:
                    continue
                seen.add(t.hash)
                result.txns.append(t)
        result.txns.sort(key=lambda t: (t.ts, t.hash))
        return result

    def read_from(self, position: str) -> Chunk:
        end = self.repo.ref(self.ref)
        if end == position:
            self._known = end
            return Chunk([], end)
        parsed = self._parse(self.changes(position, end))
        self.invalid.extend(parsed.invalid)
        self._known = end
        return Chunk(parsed.txns, end)

    def read_all(self) -> Chunk:
        """Every record as the ledger counts it (equal copies once; of two clones' records of one id the
        earliest, as every replica settles it), oldest first."""
        end = self.repo.ref(self.ref)
        parsed = self._parse(self.changes("", end))
        if parsed.invalid:
            first = parsed.invalid[0]
            raise UserError(f"{len(parsed.invalid)} invalid record(s) in {self.ref} (first: note on "
                            f"{first.note[:16]}: {first.reason}); balances ignore them")
        prints: dict[str, set[str]] = {}
        for t in parsed.txns:
            prints.setdefault(t.id, set()).add(t.fingerprint())
        self.conflicts = sorted(i for i, fps in prints.items() if len(fps) > 1)
        return Chunk(settle(lambda _id: None, parsed.txns)[0], end)

    # --- writing ---------------------------------------------------------------------------------
    def append(self, txns: list[Txn]) -> str:
        """One commit with every record of the batch (all or nothing), made from the current tip."""
        hours: dict[str, list[str]] = {}
        for t in txns:
            hours.setdefault(t.ts[:13], []).append(record_line(t))
        anchors = {hour: git.decode(self.repo.run("hash-object", "-w", "--stdin", input=anchor_text(hour)).stdout
                                    ).strip() for hour in hours}
        message = (f"token-exchange: {len(txns)} transaction{'s' if len(txns) != 1 else ''}\n\n"
                   + "\n".join(t.id for t in txns[:20]) + ("\n..." if len(txns) > 20 else ""))
        for attempt in range(self.MAX_CAS_RETRIES):
            base = self.repo.ref(self.ref)
            files = self._new_files(base, hours, anchors)
            if self._fast_import(base, files, message):
                break
            if self.repo.ref(self.ref) == base:  # not a lost race: a real failure
                raise UserError(f"could not update {self.ref}")
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        else:
            raise UserError(f"{self.ref} keeps moving under us; try again")
        commit = self.repo.ref(self.ref)
        # If the ref moved since the index was caught up (another writer outside our lock), report the old
        # position: the next catch-up reads the foreign change together with ours (equal copies dedupe).
        pos = commit if self._known is not None and base == self._known else (self._known or "")
        self._known = pos
        return pos

    def _new_files(self, base: str, hours: dict[str, list[str]], anchors: dict[str, str]) -> list[tuple[str, bytes]]:
        """(path, full new content) of every note and new anchor entry the batch changes."""
        paths = []
        for hour, anchor in anchors.items():
            paths += [anchor, f"{anchor[:2]}/{anchor[2:]}", f"{anchor[:2]}/{anchor[2:4]}/{anchor[4:]}",
                      anchor_path(hour)]
        present: dict[str, str] = {}
        if base:
            raw = self.repo.run("ls-tree", "-z", "--full-tree", "-r", base, "--", *paths).stdout
            for item in raw.split(b"\0"):
                meta, _, path = item.partition(b"\t")
                fields = meta.decode("ascii", "replace").split()
                if len(fields) == 3 and fields[1] == "blob":
                    present[path.decode("utf-8", "surrogateescape")] = fields[2]
        existing: dict[str, tuple[str, str]] = {}  # anchor -> (its note's path, blob)
        for anchor in anchors.values():
            for path in (anchor, f"{anchor[:2]}/{anchor[2:]}", f"{anchor[:2]}/{anchor[2:4]}/{anchor[4:]}"):
                if path in present:
                    existing[anchor] = (path, present[path])
                    break
        bodies = self._read_blobs({blob for _, blob in existing.values()})
        files: list[tuple[str, bytes]] = []
        for hour, lines in hours.items():
            anchor = anchors[hour]
            path, blob = existing.get(anchor, (f"{anchor[:2]}/{anchor[2:]}", ""))
            body = bodies.get(blob, b"") if blob else b""
            if body and not body.endswith(b"\n"):
                body += b"\n"
            files.append((path, body + ("\n".join(lines) + "\n").encode("utf-8")))
            if anchor_path(hour) not in present:
                files.append((anchor_path(hour), anchor_text(hour)))
        return files

    def _fast_import(self, base: str, files: list[tuple[str, bytes]], message: str) -> bool:
        """One commit on the notes ref with ``files`` changed, only if the ref still points at ``base``."""
        ident = ident_env()
        stream = [f"commit {self.ref}\n".encode(),
                  f"committer {ident['GIT_COMMITTER_NAME']} <{ident['GIT_COMMITTER_EMAIL']}> "
                  f"{int(time.time())} +0000\n".encode(), _data(message.encode())]
        if base:
            stream.append(f"from {base}\n".encode())
        for path, content in files:
            stream += [f"M {BLOB_MODE} inline {path}\n".encode(), _data(content)]
        stream.append(b"done\n")
        proc = self.repo.run("fast-import", "--quiet", "--done", input=b"".join(stream), check=False)
        return bool(proc.returncode == 0)


def _data(body: bytes) -> bytes:
    return b"data %d\n" % len(body) + body + b"\n"


def is_note_path(path: str) -> bool:
    """A note's path: the annotated object's id, maybe split by fanout (``ab/cdef...``)."""
    parts = path.split("/")
    return bool(HEX_RE.fullmatch("".join(parts))) and all(len(p) == 2 for p in parts[:-1])


def parse_record(line: bytes) -> Txn:
    """A record line -> Txn, validated like a new transaction and checked against its own hash."""
    d = json.loads(line)
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    t = Txn.from_json(d)
    checked = make_txn(t.id, t.kind, t.payer, t.payee, t.amount, agent=t.agent, project=t.project,
                       description=t.description, source=dict(t.source), breakdown=dict(t.breakdown), ref=t.ref,
                       ts=t.ts, prev=t.prev, hash=t.hash)
    if checked != t:
        raise ValueError(f"{t.id}: fields are not in canonical form")
    if not t.ts or t.prev:
        raise ValueError(f"{t.id}: bad ts/prev")
    ts_micros(t.ts)
    if t.compute_hash() != t.hash:
        raise ValueError(f"{t.id}: does not match its hash (edited?)")
    return t


# --- setup and sync -------------------------------------------------------------------------------
def configure_repo(home: Path, cfg: Any) -> dict[str, Any]:
    """For ``tx init --backend notes``: refuse outside a git repository; nothing else to configure (records
    live on anchors, so notes need not follow amend or rebase)."""
    repo = resolve_repo(home)
    return {"repository": str(repo.common_dir), "notes_ref": cfg.notes_ref}


@dataclass
class SyncResult:
    remote: str
    ref: str
    tracking: str
    fetched: int = 0
    pushed: int = 0
    attempts: int = 0
    remote_had_notes: bool = False
    local: str = ""
    merged: bool = False
    transactions: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"remote": self.remote, "ref": self.ref, "tracking_ref": self.tracking, "fetched": self.fetched,
                "pushed": self.pushed, "attempts": self.attempts, "remote_had_notes": self.remote_had_notes,
                "merged": self.merged, "position": self.local, "transactions": self.transactions}


def sync(ledger: Ledger, remote: str = "origin", max_attempts: int = 10) -> SyncResult:
    """``tx sync`` on whatever journal the ledger has (the TOML journal refuses)."""
    result: SyncResult = ledger.journal.sync(ledger, remote)
    return result


def sync_notes(ledger: Ledger, journal: NotesJournal, remote: str = "origin", max_attempts: int = 10) -> SyncResult:
    """Fetch the remote's notes into a tracking ref, union-merge them, push without force; retry."""
    from token_exchange.git import remote as remotes

    remotes.check_remote(remote)
    repo = journal.repo
    if not repo.out("config", "--get", f"remote.{remote}.url", check=False):
        raise UserError(f"no remote named {remote!r} in {repo.common_dir} (git remote add {remote} URL)")
    name = journal.ref[len("refs/notes/"):]
    result = SyncResult(remote, journal.ref, f"refs/notes/remotes/{remote}/{name}")
    before = ledger.fresh().count()
    for attempt in range(1, max_attempts + 1):
        result.attempts = attempt
        # 1. fetch into the remote-tracking notes ref (forced there only: local notes are never touched).
        if remotes.fetch(repo.common_dir, remote, f"+{journal.ref}:{result.tracking}"):
            remote_tip = repo.ref(result.tracking)
        else:
            repo.run("update-ref", "-d", result.tracking, check=False)
            remote_tip = ""
        result.remote_had_notes = bool(remote_tip)
        # 2. merge (line union) under the ledger lock: no append interleaves with the ref update.
        with ledger.locked():
            local = journal.end()
            if remote_tip and local != remote_tip:
                if not local:
                    repo.run("update-ref", "-m", "token-exchange sync", journal.ref, remote_tip,
                             "0" * len(remote_tip))
                elif not journal.is_behind(remote_tip, local):
                    repo.run("notes", "--ref", journal.ref, "merge", "-q", "-s", "cat_sort_uniq", result.tracking,
                             env=ident_env())
                    result.merged = True
            local = journal.end()
        result.local = local
        # 3. push without force.
        if not local or local == remote_tip:
            break
        pushed = len({t.id for t in journal.new_records(remote_tip, local)})
        outcome = remotes.push(repo.common_dir, remote, f"{journal.ref}:{journal.ref}")
        if outcome.ok:
            result.pushed = pushed
            repo.run("update-ref", result.tracking, local, check=False)
            break
        if not outcome.rejected:
            raise UserError(f"git push {remote} failed: {outcome.summary}")
        # Exponential backoff with full jitter: pushers that collided spread out instead of colliding again.
        time.sleep(random.uniform(0.01, min(2.0, 0.05 * 2 ** attempt)))
    else:
        raise UserError(f"push to {remote} was rejected {max_attempts} times (others are pushing); "
                        "run `tx sync` again")
    idx = ledger.fresh()
    result.transactions = idx.count()
    result.fetched = max(0, result.transactions - before)
    return result
