"""The git-notes journal: transactions as JSON lines in git notes, shared through any git remote.

Layout (see docs/notes.md):

* Notes live under ``cfg.notes_ref`` (default ``refs/notes/token-exchange``) in the repository that
  contains the home (``.exchange/`` at the repo root); a home outside any repository (e.g.
  ``TOKEN_EXCHANGE_HOME=~/ledger``) uses the repository of the current directory.
* A commit award (kind ``earn`` with ``source.sha`` naming a commit of this repository) is a line in the
  note of that commit.  Every other record is a line in the note of an *anchor*: a blob whose text is
  a constant plus the UTC hour of the record (``git hash-object`` of it is the same in every clone, so
  two clones writing in the same hour write to the same note and merge by line union).  Hourly anchors
  keep each note small: an append rewrites one note of at most an hour of records, never the ledger.
  The first record of an anchor also stores the anchor blob under ``token-exchange-anchors/`` in the
  notes tree (a non-note entry git keeps), so anchors travel with fetch/push and survive gc and prune.
* One record per line: compact JSON with sorted keys.  ``git notes merge -s cat_sort_uniq`` (line
  union) and ``notes.rewriteMode=cat_sort_uniq`` (amend/rebase copies) therefore never lose a record;
  a record seen twice is deduplicated by id.
* No chain (``seal`` leaves ``prev`` empty): a linear hash chain cannot survive union merges.  Each record
  carries the hash of its own content; tamper evidence comes from git's object DAG (the notes ref's commits hash every
  tree and blob, and every clone that synced holds the history).

Position = the notes ref's commit.  ``end()`` reads the ref file (no subprocess on the common path).
``read_from(pos)`` diffs the notes trees between ``pos`` (or, after a merge, the merge base) and the
tip with ``git diff-tree`` and parses only the lines each changed note gained.

Appends never go through ``git notes``: under the ledger lock we write the new note blob, the one or
two trees on its path and a commit as loose objects (content-addressed, fsynced, renamed into place),
then move the ref with ``git update-ref REF NEW OLD`` (compare-and-swap).  A crash leaves at most
unreferenced objects; the ref either names the old tree or the complete new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from token_exchange.errors import UserError
from token_exchange.ledger.merge import settle
from token_exchange.ledger.protocols import Chunk, Index, Tail
from token_exchange.ledger.txn import Txn, make_txn, ts_micros

if TYPE_CHECKING:  # pragma: no cover
    from token_exchange.ledger.ledger import Ledger

ANCHOR_TEXT = "token-exchange ledger anchor v1\nhour: {hour}\n"
ANCHOR_DIR = "token-exchange-anchors"
TREE_MODE = "40000"
BLOB_MODE = "100644"
DEFAULT_IDENT = ("token-exchange", "token-exchange@localhost")
HEX_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_STRIP_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
              "GIT_NOTES_REF", "GIT_PREFIX")


def record_line(t: Txn) -> str:
    """One record: compact JSON, sorted keys, one line (JSON escapes every newline)."""
    return json.dumps(t.to_json(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def anchor_text(ts: str) -> bytes:
    return ANCHOR_TEXT.format(hour=ts[:13] or "unknown").encode()


def object_id(kind: str, body: bytes, algo: str) -> str:
    return hashlib.new(algo, f"{kind} {len(body)}\0".encode() + body).hexdigest()


# --- the repository -----------------------------------------------------------------------------
@dataclass
class Repo:
    git_dir: Path
    common_dir: Path
    _algo: str = ""

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _STRIP_ENV}
        env["GIT_DIR"] = str(self.git_dir)
        return env

    def run(self, *args: str, input: bytes | None = None, check: bool = True,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        env = self.env()
        if extra_env:
            env.update(extra_env)
        try:
            proc = subprocess.run(["git", *args], input=input, capture_output=True, env=env)
        except FileNotFoundError:
            raise UserError("git is not installed") from None
        if check and proc.returncode != 0:
            raise UserError(f"git {args[0]} failed: {last_line(proc.stderr)}")
        return proc

    def out(self, *args: str, check: bool = True) -> str:
        return self.run(*args, check=check).stdout.decode("utf-8", "surrogateescape").strip()

    @property
    def algo(self) -> str:
        if not self._algo:
            fmt = self.out("rev-parse", "--show-object-format", check=False) or "sha1"
            self._algo = "sha256" if fmt == "sha256" else "sha1"
        return self._algo

    def read_ref(self, ref: str) -> str:
        """The ref's object id, "" when absent.  Reads the loose ref / packed-refs; git for reftable."""
        loose = self.common_dir / ref
        try:
            text = loose.read_text("ascii").strip()
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError):
            text = "?"
        if HEX_RE.fullmatch(text):
            self._algo = self._algo or ("sha256" if len(text) == 64 else "sha1")
            return text
        if not text:
            packed = self.common_dir / "packed-refs"
            suffix = " " + ref
            try:
                with open(packed, encoding="ascii", errors="replace") as f:
                    for line in f:
                        line = line.rstrip("\n")
                        if line.endswith(suffix) and not line.startswith(("#", "^")):
                            oid = line[: -len(suffix)]
                            if HEX_RE.fullmatch(oid):
                                return oid
            except FileNotFoundError:
                pass
            if not (self.common_dir / "reftable").exists():
                return ""
        # A symbolic ref, the reftable backend, or something odd: ask git.
        return self.out("rev-parse", "--verify", "-q", ref + "^{commit}", check=False)


def last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "failed"


def resolve_repo(home: Path) -> Repo:
    """The repository holding ``home``; else the one of the current directory; else UserError."""
    dotgit = home.parent / ".git"
    if home.name == ".exchange" and (dotgit / "HEAD").is_file() and (dotgit / "objects").is_dir():
        d = dotgit.absolute()
        return Repo(d, d)
    clean = {k: v for k, v in os.environ.items() if k not in _STRIP_ENV}
    attempts: list[tuple[Path | None, dict[str, str]]] = []
    if home.is_dir():
        attempts.append((home, clean))
    attempts.append((None, dict(os.environ)))
    for cwd, env in attempts:
        try:
            proc = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-dir", "--git-common-dir"],
                                  cwd=cwd, env=env, capture_output=True)
        except FileNotFoundError:
            raise UserError("git is not installed") from None
        lines = proc.stdout.decode("utf-8", "surrogateescape").splitlines()
        if proc.returncode == 0 and len(lines) == 2:
            return Repo(Path(lines[0]), Path(lines[1]))
    raise UserError(f"the notes backend needs a git repository: {home} is not inside one and neither is the "
                    "current directory (run inside the repository, or use --backend toml)")


# --- objects ------------------------------------------------------------------------------------
class Objects:
    """Read objects (loose files directly, packed ones through one ``git cat-file --batch``) and write
    loose objects (zlib, fsync, atomic rename: a crash never leaves a partial object under its name)."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.dir = repo.common_dir / "objects"
        self.algo = repo.algo
        self._batch: subprocess.Popen[bytes] | None = None
        self._unsynced: list[Path] = []

    def close(self) -> None:
        if self._batch is not None:
            assert self._batch.stdin is not None
            self._batch.stdin.close()
            self._batch.wait()
            self._batch = None

    def __enter__(self) -> Objects:
        return self

    def __exit__(self, *a: object) -> None:
        self.close()

    def _loose(self, oid: str) -> Path:
        return self.dir / oid[:2] / oid[2:]

    def read(self, oid: str) -> tuple[str, bytes] | None:
        try:
            raw = zlib.decompress(self._loose(oid).read_bytes())
        except (FileNotFoundError, NotADirectoryError, zlib.error):
            return self._read_batch(oid)
        head, _, body = raw.partition(b"\0")
        kind, _, _ = head.decode("ascii").partition(" ")
        return kind, body

    def _read_batch(self, oid: str) -> tuple[str, bytes] | None:
        if self._batch is None:
            self._batch = subprocess.Popen(["git", "cat-file", "--batch"], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, env=self.repo.env())
        assert self._batch.stdin is not None and self._batch.stdout is not None
        self._batch.stdin.write(oid.encode() + b"\n")
        self._batch.stdin.flush()
        header = self._batch.stdout.readline().decode("ascii", "replace").split()
        if len(header) != 3:
            return None
        size = int(header[2])
        body = self._batch.stdout.read(size + 1)[:size]
        return header[1], body

    def exists(self, oid: str) -> bool:
        return self._loose(oid).exists() or self.read(oid) is not None

    def write(self, kind: str, body: bytes) -> str:
        data = f"{kind} {len(body)}\0".encode() + body
        oid = hashlib.new(self.algo, data).hexdigest()
        path = self._loose(oid)
        if path.exists():
            return oid
        path.parent.mkdir(exist_ok=True)
        tmp = path.parent / f"tmp_obj_tx_{os.getpid()}_{random.getrandbits(32):08x}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            view = memoryview(zlib.compress(data, 1))
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never replaces: an object under its name is always complete
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        self._unsynced.append(path)
        return oid

    def sync(self) -> None:
        """Make the new objects durable before the ref that names them moves: fsync every new object,
        then their directories (batched: after the first, the others are mostly already on disk)."""
        dirs = {p.parent for p in self._unsynced}
        for path in [*self._unsynced, *dirs]:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._unsynced.clear()


def parse_tree(body: bytes, rawlen: int) -> dict[str, tuple[str, str]]:
    """name -> (mode, oid)."""
    out: dict[str, tuple[str, str]] = {}
    i = 0
    while i < len(body):
        sp = body.index(b" ", i)
        nul = body.index(b"\0", sp)
        mode = body[i:sp].decode("ascii")
        name = body[sp + 1:nul].decode("utf-8", "surrogateescape")
        out[name] = (mode, body[nul + 1:nul + 1 + rawlen].hex())
        i = nul + 1 + rawlen
    return out


def render_tree(entries: dict[str, tuple[str, str]]) -> bytes:
    def key(name: str) -> bytes:
        raw = name.encode("utf-8", "surrogateescape")
        return raw + b"/" if entries[name][0] == TREE_MODE else raw

    return b"".join(f"{entries[n][0]} ".encode() + n.encode("utf-8", "surrogateescape") + b"\0"
                    + bytes.fromhex(entries[n][1]) for n in sorted(entries, key=key))


# --- the journal --------------------------------------------------------------------------------
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
        self._created = False
        self.invalid: list[Invalid] = []

    @property
    def repo(self) -> Repo:
        if self._repo is None:
            self._repo = resolve_repo(self.home)
        return self._repo

    def lock_path(self) -> Path:
        # In the repository (not the home): every home and worktree sharing these notes serialises here.
        return self.repo.common_dir / "token-exchange.lock"

    def end(self) -> str:
        pos = self.repo.read_ref(self.ref)
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
            return f"git notes {self.ref}" if self.repo.read_ref(self.ref) else None
        except UserError:
            return None

    def seal(self, txns: list[Txn], last_hash: str) -> list[Txn]:
        """Each record carries the hash of its own content (no chain: union merges reorder records)."""
        return [t._replace(prev="", hash=t._replace(prev="").compute_hash()) for t in txns]

    def accept(self, idx: Index, txns: list[Txn]) -> tuple[list[Txn], bool]:
        return settle(idx.get, txns)

    def link_problems(self, txns: list[Txn]) -> list[str]:
        problems: list[str] = []
        seen: dict[str, str] = {}
        for n, t in enumerate(txns):
            fp = t.fingerprint()
            if seen.get(t.id, fp) != fp:
                problems.append(f"transaction {n}: id {t.id} appears twice")
            seen.setdefault(t.id, fp)
        return problems

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
        return self.repo.run("merge-base", "--is-ancestor", position, end, check=False).returncode == 0

    # --- reading ---------------------------------------------------------------------------------
    def changes(self, old: str, new: str) -> list[Change]:
        """Notes added or modified between two notes commits (everything when ``old`` is "")."""
        if not new:
            return []
        base = ""
        if old:
            base = self.repo.out("merge-base", old, new, check=False)
        if base:
            if base == new:
                return []
            raw = self.repo.run("diff-tree", "-r", "-z", "--no-renames", "--no-commit-id", base, new).stdout
            out: list[Change] = []
            gone: dict[str, str] = {}  # object -> its old note blob, for notes that moved (fanout change)
            parts = raw.split(b"\0")
            i = 0
            while i + 1 < len(parts):
                meta = parts[i].decode("ascii", "replace")
                path = parts[i + 1].decode("utf-8", "surrogateescape")
                i += 2
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
                zero = set(oid_old) == {"0"}
                out.append(Change(path, oid_new, "" if zero or status.startswith("A") else oid_old))
            for c in out:
                if not c.old:
                    c.old = gone.get(c.path.replace("/", ""), "")
            return out
        raw = self.repo.run("ls-tree", "-r", "-z", "--full-tree", new).stdout
        out = []
        for item in raw.split(b"\0"):
            if not item:
                continue
            meta, _, path = item.partition(b"\t")
            mode, kind, oid = meta.decode("ascii").split()
            name = path.decode("utf-8", "surrogateescape")
            if kind == "blob" and mode == BLOB_MODE and is_note_path(name):
                out.append(Change(name, oid))
        return out

    def _read_blobs(self, oids: set[str]) -> dict[str, bytes]:
        if not oids:
            return {}
        order = sorted(oids)
        raw = self.repo.run("cat-file", "--batch", input=("\n".join(order) + "\n").encode()).stdout
        out: dict[str, bytes] = {}
        pos = 0
        for oid in order:
            nl = raw.index(b"\n", pos)
            header = raw[pos:nl].decode("ascii", "replace").split()
            pos = nl + 1
            if len(header) != 3:
                continue
            size = int(header[2])
            out[oid] = raw[pos:pos + size]
            pos += size + 1
        return out

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
                except (ValueError, KeyError, TypeError, UserError) as e:
                    result.invalid.append(Invalid(target, " ".join(str(e).split())[:200]))
                    continue
                if t.hash in seen:
                    continue
                seen.add(t.hash)
                result.txns.append(t)
        result.txns.sort(key=lambda t: (t.ts, t.hash))
        return result

    def read_from(self, position: str) -> Chunk:
        end = self.repo.read_ref(self.ref)
        if end == position:
            self._known = end
            return Chunk([], end)
        parsed = self._parse(self.changes(position, end))
        self.invalid.extend(parsed.invalid)
        self._known = end
        return Chunk(parsed.txns, end)

    def read_all(self) -> Chunk:
        """Every distinct record (equal copies once; conflicting ones all kept), oldest first."""
        end = self.repo.read_ref(self.ref)
        parsed = self._parse(self.changes("", end))
        if parsed.invalid:
            first = parsed.invalid[0]
            raise UserError(f"{len(parsed.invalid)} invalid record(s) in {self.ref} (first: note on "
                            f"{first.note[:16]}: {first.reason}); balances ignore them")
        return Chunk(parsed.txns, end)

    # --- writing ---------------------------------------------------------------------------------
    def append(self, txns: list[Txn]) -> str:
        groups: dict[str, list[str]] = {}
        anchors: dict[str, str] = {}  # anchor blob id -> its hour
        with Objects(self.repo) as objects:
            for t in txns:
                target = self._target(t, objects)
                if target != t.source.get("sha"):
                    anchors[target] = t.ts[:13]
                groups.setdefault(target, []).append(record_line(t))
            message = (f"token-exchange: {len(txns)} transaction{'s' if len(txns) != 1 else ''}\n\n"
                       + "\n".join(t.id for t in txns[:20]) + ("\n..." if len(txns) > 20 else ""))
            for attempt in range(self.MAX_CAS_RETRIES):
                base = self.repo.read_ref(self.ref)
                tree = self._tree_of(base, objects) if base else ""
                for target, lines in groups.items():
                    self._created = False
                    tree = self._put(objects, tree, target, ("\n".join(lines) + "\n").encode(), 0)
                    if self._created and target in anchors:
                        tree = self._keep_anchor(objects, tree, anchors[target], target)
                commit = objects.write("commit", self._commit_body(tree, base, message))
                objects.sync()
                zero = "0" * len(commit)
                proc = self.repo.run("update-ref", "-m", "token-exchange append", self.ref, commit, base or zero,
                                     check=False)
                if proc.returncode == 0:
                    break
                if self.repo.read_ref(self.ref) == base:  # not a lost race: a real failure
                    raise UserError(f"could not update {self.ref}: {last_line(proc.stderr)}")
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
            else:
                raise UserError(f"{self.ref} keeps moving under us; try again")
        # If the ref moved since the index was caught up (another writer outside our lock), report the
        # old position: the next catch-up reads the foreign change together with ours (equal copies
        # dedupe), so nothing is skipped.
        pos = commit if self._known is not None and base == self._known else (self._known or "")
        self._known = pos
        return pos

    def _target(self, t: Txn, objects: Objects) -> str:
        sha = str(t.source.get("sha", "")) if t.kind == "earn" else ""
        if HEX_RE.fullmatch(sha) and len(sha) == (64 if objects.algo == "sha256" else 40):
            found = objects.read(sha)
            if found is not None and found[0] == "commit":
                return sha
        return objects.write("blob", anchor_text(t.ts))

    def _tree_of(self, commit: str, objects: Objects) -> str:
        found = objects.read(commit)
        if found is None or found[0] != "commit":
            raise UserError(f"{self.ref} points at {commit[:12]}, which is not a commit here")
        first = found[1].split(b"\n", 1)[0].decode("ascii")
        return first.split()[1]

    def _put(self, objects: Objects, tree: str, name: str, lines: bytes, depth: int) -> str:
        """Add ``lines`` to the note for ``name`` under ``tree``; returns the new tree id.

        Follows whatever fanout the tree already has (git reads mixed fanouts); a new note goes one
        level down (``ab/cdef...``), so the root stays small and an append touches two small trees."""
        rawlen = 32 if objects.algo == "sha256" else 20
        entries: dict[str, tuple[str, str]] = {}
        if tree:
            found = objects.read(tree)
            if found is None or found[0] != "tree":
                raise UserError(f"notes tree {tree[:12]} is missing or not a tree")
            entries = parse_tree(found[1], rawlen)
        here = entries.get(name)
        sub = entries.get(name[:2])
        if here is not None and here[0] != TREE_MODE:
            old = objects.read(here[1])
            body = old[1] if old is not None else b""
            if body and not body.endswith(b"\n"):
                body += b"\n"
            entries[name] = (BLOB_MODE, objects.write("blob", body + lines))
        elif sub is not None and sub[0] == TREE_MODE and len(name) > 2:
            entries[name[:2]] = (TREE_MODE, self._put(objects, sub[1], name[2:], lines, depth + 1))
        elif depth == 0 and sub is None:
            entries[name[:2]] = (TREE_MODE, self._put(objects, "", name[2:], lines, depth + 1))
        else:
            entries[name] = (BLOB_MODE, objects.write("blob", lines))
            self._created = True
        return objects.write("tree", render_tree(entries))

    def _keep_anchor(self, objects: Objects, tree: str, hour: str, blob: str) -> str:
        """Keep a new anchor blob reachable from the notes ref (a non-note entry, which git notes keeps
        through merges and copies), so it travels with push/fetch and survives gc and `git notes prune`."""
        year, _, rest = hour.partition("-")
        return self._set(objects, tree, [ANCHOR_DIR, year or "unknown", rest or "unknown"], blob)

    def _set(self, objects: Objects, tree: str, parts: list[str], blob: str) -> str:
        rawlen = 32 if objects.algo == "sha256" else 20
        entries: dict[str, tuple[str, str]] = {}
        if tree:
            found = objects.read(tree)
            if found is not None and found[0] == "tree":
                entries = parse_tree(found[1], rawlen)
        if len(parts) == 1:
            entries[parts[0]] = (BLOB_MODE, blob)
        else:
            sub = entries.get(parts[0])
            entries[parts[0]] = (TREE_MODE, self._set(objects, sub[1] if sub and sub[0] == TREE_MODE else "",
                                                      parts[1:], blob))
        return objects.write("tree", render_tree(entries))

    def _commit_body(self, tree: str, parent: str, message: str) -> bytes:
        name = _ident_part(os.environ.get("GIT_COMMITTER_NAME") or DEFAULT_IDENT[0])
        email = _ident_part(os.environ.get("GIT_COMMITTER_EMAIL") or DEFAULT_IDENT[1])
        stamp = f"{int(time.time())} +0000"
        lines = [f"tree {tree}"] + ([f"parent {parent}"] if parent else [])
        lines += [f"author {name} <{email}> {stamp}", f"committer {name} <{email}> {stamp}", "", message]
        return ("\n".join(lines) + "\n").encode("utf-8")


def _ident_part(text: str) -> str:
    return re.sub(r"[<>\n\r\0]", "", text).strip() or "token-exchange"


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
    """For ``tx init --backend notes``: notes follow amend/rebase (cat_sort_uniq), refuse outside git."""
    repo = resolve_repo(home)
    current = repo.out("config", "--get-all", "notes.rewriteRef", check=False).splitlines()
    if cfg.notes_ref not in current:
        repo.run("config", "--add", "notes.rewriteRef", cfg.notes_ref)
    repo.run("config", "notes.rewriteMode", "cat_sort_uniq")
    return {"repository": str(repo.common_dir), "rewrite_ref": cfg.notes_ref, "rewrite_mode": "cat_sort_uniq"}


REMOTE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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


_RETRYABLE = ("[rejected]", "fetch first", "non-fast-forward", "cannot lock ref", "failed to update ref",
              "incorrect old value", "failed to lock", "stale info")


def sync(ledger: Ledger, remote: str = "origin", max_attempts: int = 10) -> SyncResult:
    """``tx sync`` on whatever journal the ledger has (the TOML journal refuses)."""
    result: SyncResult = ledger.journal.sync(ledger, remote)
    return result


def sync_notes(ledger: Ledger, journal: NotesJournal, remote: str = "origin", max_attempts: int = 10) -> SyncResult:
    """Fetch the remote's notes into a tracking ref, union-merge them, push without force; retry."""
    if not REMOTE_RE.fullmatch(remote) or ".." in remote or remote.endswith(".lock"):
        raise UserError(f"invalid remote name {remote[:40]!r}")
    repo = journal.repo
    if repo.run("config", "--get", f"remote.{remote}.url", check=False).returncode != 0:
        raise UserError(f"no remote named {remote!r} in {repo.common_dir} (git remote add {remote} URL)")
    name = journal.ref[len("refs/notes/"):]
    result = SyncResult(remote, journal.ref, f"refs/notes/remotes/{remote}/{name}")
    before = ledger.fresh().count()
    ident = {"GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME") or DEFAULT_IDENT[0],
             "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL") or DEFAULT_IDENT[1],
             "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME") or DEFAULT_IDENT[0],
             "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL") or DEFAULT_IDENT[1]}
    for attempt in range(1, max_attempts + 1):
        result.attempts = attempt
        # 1. fetch into the remote-tracking notes ref (forced there only: local notes are never touched).
        proc = repo.run("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", remote,
                        f"+{journal.ref}:{result.tracking}", check=False)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace")
            if "couldn't find remote ref" not in err:
                raise UserError(f"git fetch {remote} failed: {last_line(proc.stderr)}")
            repo.run("update-ref", "-d", result.tracking, check=False)
            remote_tip = ""
        else:
            remote_tip = repo.read_ref(result.tracking)
        result.remote_had_notes = bool(remote_tip)
        # 2. merge (line union) under the ledger lock: no append interleaves with the ref update.
        with ledger.locked():
            local = journal.end()
            if remote_tip and local != remote_tip:
                if not local:
                    repo.run("update-ref", "-m", "token-exchange sync", journal.ref, remote_tip, "0" * len(remote_tip))
                elif not journal.is_behind(remote_tip, local):
                    repo.run("notes", "--ref", journal.ref, "merge", "-q", "-s", "cat_sort_uniq", result.tracking,
                             extra_env=ident)
                    result.merged = True
            local = journal.end()
        result.local = local
        # 3. push without force.
        if not local or local == remote_tip:
            break
        pushed = len({t.id for t in journal.new_records(remote_tip, local)})
        proc = repo.run("push", "--porcelain", "--quiet", "--no-verify", remote, f"{journal.ref}:{journal.ref}",
                        check=False)
        text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
        if proc.returncode == 0:
            result.pushed = pushed
            repo.run("update-ref", result.tracking, local, check=False)
            break
        if not any(marker in text for marker in _RETRYABLE):
            raise UserError(f"git push {remote} failed: {last_line(proc.stdout + proc.stderr)}")
        # Exponential backoff with full jitter: pushers that collided spread out instead of colliding again.
        time.sleep(random.uniform(0.01, min(2.0, 0.05 * 2 ** attempt)))
    else:
        raise UserError(f"push to {remote} was rejected {max_attempts} times (others are pushing); "
                        "run `tx sync` again")
    idx = ledger.fresh()
    result.transactions = idx.count()
    result.fetched = max(0, result.transactions - before)
    return result
