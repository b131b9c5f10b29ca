"""The git-notes ledger backend and `tx sync`: real git, real remotes, no mocks."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import git, tx
from token_exchange.amounts import SCALE
from token_exchange.errors import UserError
from token_exchange.ledger.backends.notes import ANCHOR_DIR, NotesJournal, anchor_text, sync
from token_exchange.ledger.doctor import check
from token_exchange.ledger.txn import make_txn
from token_exchange.services.exchange import Exchange
from token_exchange.services.setup import init_home

REF = "refs/notes/token-exchange"
START = 10_000 * SCALE  # the seed's starting balance


def make_remote(tmp_path: Path, clones: int) -> tuple[Path, list[Path]]:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "-q", str(remote), str(seed))
    (seed / "README").write_text("hello\n")
    git(seed, "add", "README")
    git(seed, "commit", "-q", "-m", "initial")
    git(seed, "push", "-q", "origin", "main")
    out = []
    for i in range(clones):
        path = tmp_path / f"clone{i}"
        git(tmp_path, "clone", "-q", str(remote), str(path))
        init_home(str(path / ".exchange"), "notes")
        out.append(path)
    return remote, out


def ex_for(clone: Path) -> Exchange:
    return Exchange(clone / ".exchange")


def record_lines(clone: Path) -> list[dict]:
    """Every record line in every note (raw, duplicates included)."""
    j = NotesJournal(clone / ".exchange", ex_for(clone).cfg)
    txns = j.read_all().txns
    return [t.to_json() for t in txns]


def balances(clone: Path) -> dict[str, int]:
    ex = ex_for(clone)
    try:
        return {b.agent: b.balance for b in ex.balances()}
    finally:
        ex.close()


def blob_id(data: bytes) -> str:
    """The id git gives ``data`` as a blob (computed by git itself)."""
    return subprocess.run(["git", "hash-object", "--stdin"], input=data, capture_output=True,
                          check=True).stdout.decode().strip()


# --- basics -------------------------------------------------------------------------------------
def test_init_needs_no_rewrite_config_and_refuses_outside_git(tmp_path: Path, repo: Path) -> None:
    r = tx("init", "--backend", "notes", "--json", cwd=repo)
    assert r.code == 0, r.err
    # records live on anchors, never on commits: notes need not follow amend or rebase
    assert git(repo, "config", "--get-all", "notes.rewriteRef", check=False) == ""
    assert tx("init", "--backend", "notes", cwd=repo).code == 0  # idempotent

    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    r = tx("--home", str(outside / "home"), "init", "--backend", "notes", cwd=outside)
    assert r.code == 1
    assert "needs a git repository" in r.err
    assert "Traceback" not in r.err


def test_balance_award_and_notes_layout(repo: Path) -> None:
    assert tx("init", "--backend", "notes", cwd=repo).code == 0
    r = tx("award", "claude", "12.5", "review", "good review", "--json", cwd=repo)
    assert r.code == 0, r.err
    r = tx("balance", "claude", "--json", cwd=repo)
    assert r.code == 0, r.err
    assert str(r.json()["balance"]) == "10012.5"
    # Non-commit records sit in the note of the hour's anchor blob, which the notes tree keeps reachable.
    notes = git(repo, "notes", "--ref", REF, "list").split()
    anchors = [n for i, n in enumerate(notes) if i % 2 == 1]
    assert len(anchors) == 1
    text = git(repo, "cat-file", "-p", anchors[0])
    assert text.startswith("token-exchange ledger anchor v1\n")
    assert ANCHOR_DIR in git(repo, "ls-tree", "--name-only", REF)
    lines = git(repo, "notes", "--ref", REF, "show", anchors[0]).splitlines()
    assert all(json.loads(line) for line in lines)
    assert all(line == json.dumps(json.loads(line), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
               for line in lines)
    assert subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=repo, capture_output=True).returncode == 0
    r = tx("doctor", "--json", cwd=repo)
    assert r.code == 0 and r.json()["ok"], r.out


def test_commit_awards_live_on_anchors_so_rewrites_and_gc_cannot_lose_them(repo: Path) -> None:
    assert tx("init", "--backend", "notes", cwd=repo).code == 0
    ex = ex_for(repo)
    git(repo, "commit", "-q", "--allow-empty", "-m", "feat: first")
    sha = git(repo, "rev-parse", "HEAD").strip()
    out = ex.commit("claude@aygp-dr.ai", "proj", "feat: first", reward_id="R" + "a" * 16, sha=sha)
    assert out.shares and out.shares[0].created
    assert git(repo, "notes", "--ref", REF, "show", sha, check=False) == ""  # not on the commit
    anchor = blob_id(anchor_text(out.shares[0].txn.ts))
    note = git(repo, "notes", "--ref", REF, "show", anchor)
    assert f'"sha":"{sha}"' in note and "commit:R" in note

    # amend, rebase, then expire the reflog and prune: the old commits are gone, the payments are not
    git(repo, "commit", "-q", "--amend", "--allow-empty", "-m", "feat: first (amended)")
    git(repo, "checkout", "-q", "-b", "topic")
    for n in (1, 2):
        (repo / f"f{n}").write_text(f"{n}\n")
        git(repo, "add", f"f{n}")
        git(repo, "commit", "-q", "-m", f"fix: topic {n}")
        s = git(repo, "rev-parse", "HEAD").strip()
        ex.commit("claude@aygp-dr.ai", "proj", f"fix: topic {n}", reward_id=f"R{n:016x}", sha=s)
    git(repo, "checkout", "-q", "main")
    (repo / "other").write_text("x\n")
    git(repo, "add", "other")
    git(repo, "commit", "-q", "-m", "chore: other")
    git(repo, "checkout", "-q", "topic")
    git(repo, "rebase", "-q", "main")
    count = ex.ledger.fresh().count()
    earned = ex.balance("claude").earned
    ex.close()
    git(repo, "reflog", "expire", "--expire=now", "--all")
    git(repo, "gc", "-q", "--prune=now")
    git(repo, "notes", "--ref", REF, "prune")
    (repo / ".exchange" / "index.sqlite").unlink()
    ex = ex_for(repo)
    assert ex.ledger.fresh().count() == count and ex.balance("claude").earned == earned
    report = check(ex.ledger)
    assert report.ok, report.problems
    assert report.transactions == count
    ex.close()


def test_read_from_is_incremental_and_survives_merges(tmp_path: Path) -> None:
    _, (a, b) = make_remote(tmp_path, 2)
    ex = ex_for(a)
    j = ex.ledger.journal
    ex.award("claude", SCALE, "t", "one", id="award:one")
    pos = j.end()
    ex.award("claude", SCALE, "t", "two", id="award:two")
    txns, end, torn, _ = j.read_from(pos)
    assert [t.id for t in txns] == ["award:two"] and end == j.end() and torn is None
    # A diverged history: b writes, a merges b's notes; the old position is no longer the tip's parent
    exb = ex_for(b)
    exb.award("builder", SCALE, "t", "three", id="award:three")
    sync(exb.ledger)
    sync(ex.ledger)
    txns, _, _, _ = j.read_from(pos)
    assert {"award:two", "award:three"} <= {t.id for t in txns}
    assert ex.ledger.fresh().get("award:three") is not None
    ex.close()
    exb.close()


def test_home_outside_the_repository_uses_the_current_directory(tmp_path: Path, repo: Path) -> None:
    home = tmp_path / "elsewhere" / "home"
    env = {"TOKEN_EXCHANGE_HOME": str(home)}
    assert tx("init", "--backend", "notes", cwd=repo, env=env).code == 0
    assert tx("award", "spark", "3", "t", "x", cwd=repo, env=env).code == 0
    assert git(repo, "rev-parse", "--verify", "-q", REF).strip()
    assert not (home / "ledger.toml").exists()
    r = tx("balance", "spark", "--json", cwd=repo, env=env)
    assert r.code == 0 and str(r.json()["balance"]) == "10003"


# --- sync ---------------------------------------------------------------------------------------
def test_sync_cli_json_and_refusals(tmp_path: Path, repo: Path) -> None:
    _, (a, b) = make_remote(tmp_path, 2)
    assert tx("award", "claude", "2", "t", "from a", "--id", "award:a1", cwd=a).code == 0
    r = tx("sync", "--json", cwd=a)
    assert r.code == 0, r.err
    data = r.json()
    assert data["remote_had_notes"] is False and data["pushed"] > 0 and data["attempts"] == 1
    r = tx("sync", cwd=b)
    assert r.code == 0, r.err
    assert "origin: fetched" in r.out
    assert tx("balance", "claude", "--json", cwd=b).json()["balance"] == tx(
        "balance", "claude", "--json", cwd=a).json()["balance"]
    r = tx("sync", "nowhere", cwd=a)
    assert r.code == 1 and "no remote named 'nowhere'" in r.err
    assert tx("init", cwd=repo).code == 0  # TOML backend
    r = tx("sync", cwd=repo)
    assert r.code == 1 and "needs the notes backend" in r.err


def test_sync_never_forces_local_notes(tmp_path: Path) -> None:
    remote, (a, b) = make_remote(tmp_path, 2)
    exa, exb = ex_for(a), ex_for(b)
    exa.award("claude", SCALE, "t", "a", id="award:a")
    sync(exa.ledger)
    exb.award("builder", SCALE, "t", "b", id="award:b")
    local_b = exb.ledger.journal.end()
    sync(exb.ledger)
    # b's notes commit is an ancestor of what b pushed: nothing of b's was overwritten
    assert git(b, "merge-base", "--is-ancestor", local_b, REF, check=False) == ""
    assert git(remote, "rev-parse", REF).strip() == git(b, "rev-parse", REF).strip()
    sync(exa.ledger)
    for ex in (exa, exb):
        assert ex.ledger.fresh().get("award:a") and ex.ledger.fresh().get("award:b")
        ex.close()


@pytest.mark.slow
def test_three_clones_append_and_sync_concurrently(tmp_path: Path) -> None:
    """The scale-out claim: concurrent appends and racing syncs converge on exactly the union."""
    remote, clones = make_remote(tmp_path, 3)
    rng = random.Random(20240611)
    agents = ["claude", "builder", "lambda", "spark", "observer", "zero"]
    plans: list[list[tuple]] = []
    expected: dict[str, tuple[str, int]] = {}
    for c in range(3):
        steps: list[tuple] = []
        for k in range(14):
            roll = rng.random()
            if roll < 0.55:
                agent, amount = rng.choice(agents), rng.randint(1, 50) * SCALE
                tid = f"award:c{c}-{k}"
                expected[tid] = (agent, amount)
                steps.append(("award", tid, agent, amount))
            elif roll < 0.75:
                steps.append(("commit", f"R{c:02x}{k:014x}"))
            else:
                steps.append(("sync",))
        steps.append(("sync",))
        plans.append(steps)
    commit_ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(c: int) -> None:
        clone = clones[c]
        ex = ex_for(clone)
        try:
            for step in plans[c]:
                if step[0] == "award":
                    ex.award(step[2], step[3], "test", f"step {step[1]}", id=step[1])
                elif step[0] == "commit":
                    git(clone, "commit", "-q", "--allow-empty", "-m", f"feat: {step[1]}")
                    sha = git(clone, "rev-parse", "HEAD").strip()
                    out = ex.commit("builder@aygp-dr.ai", "proj", f"feat: {step[1]}", reward_id=step[1], sha=sha)
                    with lock:
                        commit_ids.extend(a.txn.id for a in out.shares)
                        for a in out.shares:
                            expected[a.txn.id] = (a.txn.agent, a.txn.amount)
                else:
                    sync(ex.ledger)
                time.sleep(rng.random() * 0.01)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            ex.close()

    # A second writer per clone through the real CLI (another process, same lock and notes ref).
    def cli_writer(c: int) -> None:
        for k in range(2):
            tid = f"award:cli{c}-{k}"
            r = tx("award", "zero", "1", "cli", f"cli {c} {k}", "--id", tid, cwd=clones[c], real=True)
            if r.code != 0:
                errors.append(AssertionError(r.err))
            with lock:
                expected[tid] = ("zero", SCALE)

    _run_all([threading.Thread(target=worker, args=(c,)) for c in range(3)]
             + [threading.Thread(target=cli_writer, args=(c,)) for c in range(3)])
    assert not errors, errors
    # Racing syncs: every clone appends, then all push at the same moment (rejections are retried).
    for r in range(3):
        barrier = threading.Barrier(3)

        def racer(c: int, r: int = r, barrier: threading.Barrier = barrier) -> None:
            ex = ex_for(clones[c])
            try:
                tid = f"award:race{r}-{c}"
                ex.award("observer", SCALE, "race", tid, id=tid)
                with lock:
                    expected[tid] = ("observer", SCALE)
                barrier.wait()
                sync(ex.ledger)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
            finally:
                ex.close()

        _run_all([threading.Thread(target=racer, args=(c,)) for c in range(3)])
    assert not errors, errors
    # Converge: two rounds of syncs in a seeded random order.
    for _ in range(2):
        order = [0, 1, 2]
        rng.shuffle(order)
        for c in order:
            ex = ex_for(clones[c])
            sync(ex.ledger)
            ex.close()
    for c in range(3):  # the last clone's push reached everyone only after one more fetch
        ex = ex_for(clones[c])
        sync(ex.ledger)
        ex.close()

    assert len(commit_ids) == len(set(commit_ids)) > 0
    want_ids = set(expected) | {f"open:{a}" for a in agents}
    want_bal = {a: START + sum(amt for ag, amt in expected.values() if ag == a) for a in agents}
    tips = set()
    for clone in clones:
        ex = ex_for(clone)
        idx = ex.ledger.fresh()
        ids = {t.id for t in idx.iter_txns()}
        assert ids == want_ids, (clone.name, ids ^ want_ids)
        assert idx.count() == len(want_ids)
        assert {a: idx.account(a) for a in agents} == want_bal
        records = record_lines(clone)
        by_id: dict[str, set[str]] = {}
        for rec in records:
            content = {k: v for k, v in rec.items() if k not in ("ts", "hash", "prev")}
            by_id.setdefault(rec["id"], set()).add(json.dumps(content, sort_keys=True))
        assert set(by_id) == want_ids and all(len(v) == 1 for v in by_id.values())  # none lost, none conflicting
        report = check(ex.ledger)
        assert report.ok, report.problems
        assert report.transactions == len(want_ids)
        tips.add(git(clone, "rev-parse", REF).strip())
        assert subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=clone,
                              capture_output=True).returncode == 0
        ex.close()
    assert len(tips) == 1
    assert git(remote, "rev-parse", REF).strip() in tips
    assert balances(clones[0]) == balances(clones[1]) == balances(clones[2])


def test_conflicting_records_settle_the_same_everywhere_and_doctor_reports_them(tmp_path: Path) -> None:
    _, (a, b) = make_remote(tmp_path, 2)
    exa, exb = ex_for(a), ex_for(b)
    exa.award("claude", 5 * SCALE, "t", "same id", id="award:dup")
    time.sleep(0.01)
    exb.award("claude", 9 * SCALE, "t", "same id", id="award:dup")  # later ts: loses everywhere
    sync(exb.ledger)
    sync(exa.ledger)
    sync(exb.ledger)
    for ex in (exa, exb):
        assert ex.ledger.fresh().get("award:dup").amount == 5 * SCALE
        assert ex.balance("claude").balance == START + 5 * SCALE
        report = check(ex.ledger)  # settled the same way on every replica: consistent, and said so
        assert report.ok and any("award:dup" in n for n in report.notes), report.problems
        ex.close()


def test_equal_duplicates_across_notes_are_not_problems(tmp_path: Path) -> None:
    _, (a, b) = make_remote(tmp_path, 2)
    # Both clones wrote open:* for every agent (different ts, equal content) and the same award id.
    exa, exb = ex_for(a), ex_for(b)
    for ex in (exa, exb):
        ex.award("spark", 2 * SCALE, "t", "same everywhere", id="award:same")
        sync(ex.ledger)
    sync(exa.ledger)
    for ex in (exa, exb):
        report = check(ex.ledger)
        assert report.ok, report.problems
        assert ex.balance("spark").balance == START + 2 * SCALE
        ex.close()


RACE_HOOK = """#!/bin/sh
# First push only: another client's notes commit lands between this client's fetch and its push.
if [ ! -e "$GIT_DIR/raced" ]; then
  touch "$GIT_DIR/raced"
  unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
  git notes --ref refs/notes/token-exchange append -F "$GIT_DIR/raced-record" ANCHOR
fi
exit 0
"""


def test_rejected_push_is_fetched_merged_and_retried(tmp_path: Path) -> None:

    from token_exchange.ledger.backends.notes import record_line

    remote, (a,) = make_remote(tmp_path, 1)
    ex = ex_for(a)
    ex.award("claude", SCALE, "t", "first", id="award:first")
    assert sync(ex.ledger).attempts == 1
    first = ex.ledger.get("award:first")
    raced = make_txn("award:raced", "award", "world:rewards", "observer", 3 * SCALE, agent="observer",
                     description="pushed by someone else", ts=first.ts)
    raced = raced._replace(hash=raced.compute_hash())
    (remote / "raced-record").write_text(record_line(raced) + "\n")
    anchor = blob_id(anchor_text(first.ts))
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(RACE_HOOK.replace("ANCHOR", anchor))
    hook.chmod(0o755)
    ex.award("claude", SCALE, "t", "second", id="award:second")
    result = sync(ex.ledger)
    assert result.attempts == 2 and result.merged
    assert result.fetched == 1 and ex.ledger.get("award:raced") is not None
    assert ex.balance("observer").balance == START + 3 * SCALE
    assert git(remote, "rev-parse", REF).strip() == git(a, "rev-parse", REF).strip()
    assert git(remote, "merge-base", "--is-ancestor", git(a, "rev-parse", REF).strip(), REF, check=False) == ""
    assert check(ex.ledger).ok
    ex.close()


# --- failure and tampering ----------------------------------------------------------------------
def test_failed_ref_update_leaves_nothing_half_written(repo: Path) -> None:
    assert tx("init", "--backend", "notes", cwd=repo).code == 0
    ex = ex_for(repo)
    ex.award("claude", SCALE, "t", "before", id="award:before")
    tip = ex.ledger.journal.end()
    count = ex.ledger.fresh().count()
    lockfile = repo / ".git" / (REF + ".lock")
    lockfile.write_text("")  # another git process holds the ref
    with pytest.raises(UserError, match="could not update"):
        ex.award("claude", SCALE, "t", "blocked", id="award:blocked")
    assert ex.ledger.journal.end() == tip
    assert ex.ledger.fresh().count() == count and ex.ledger.fresh().get("award:blocked") is None
    lockfile.unlink()
    ex.award("claude", SCALE, "t", "blocked", id="award:blocked")
    assert check(ex.ledger).ok
    ex.close()


KILL_WRITER = r"""
import sys
from pathlib import Path
from token_exchange.services.exchange import Exchange
ex = Exchange(Path(sys.argv[1]))
for k in range(10_000):
    ex.award("claude", 10_000, "t", f"k{k}", id=f"award:kill-{k}")
    print(k, flush=True)
"""


def test_sigkilled_writers_never_leave_partial_state(repo: Path) -> None:
    assert tx("init", "--backend", "notes", cwd=repo).code == 0
    acked: set[str] = set()
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(repo / ".exchange")],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        deadline = time.monotonic() + 0.4 + 0.3 * round_
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.add(f"award:kill-{line.split()[0]}")
        os.kill(proc.pid, signal.SIGKILL)
        for line in proc.stdout:
            acked.add(f"award:kill-{line.split()[0]}")
        proc.wait()
    assert acked
    ex = ex_for(repo)
    ids = {t.id for t in ex.ledger.fresh().iter_txns()}
    assert acked <= ids  # everything acknowledged survived
    report = check(ex.ledger)
    assert report.ok, report.problems  # every record parses and matches its hash; index in step
    assert subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=repo,
                          capture_output=True).returncode == 0
    ex.close()


def test_edited_record_is_ignored_and_reported(repo: Path) -> None:
    assert tx("init", "--backend", "notes", cwd=repo).code == 0
    ex = ex_for(repo)
    ex.award("claude", SCALE, "t", "honest", id="award:honest")
    anchor = blob_id(anchor_text(ex.ledger.get("award:honest").ts))
    text = git(repo, "notes", "--ref", REF, "show", anchor)
    forged = text.replace('"amount":"1"', '"amount":"1000"').replace("award:honest", "award:forged")
    assert forged != text
    git(repo, "notes", "--ref", REF, "add", "-f", "-m", forged.rstrip("\n"), anchor)
    ex.close()
    ex = ex_for(repo)
    assert ex.ledger.fresh().get("award:forged") is None  # catch-up skips it
    report = check(ex.ledger)
    assert not report.ok and any("invalid record" in p for p in report.problems)
    ex.close()


def test_anchors_survive_gc_and_notes_prune_in_other_clones(tmp_path: Path) -> None:
    _, (a, b) = make_remote(tmp_path, 2)
    exa = ex_for(a)
    exa.award("claude", SCALE, "t", "anchored", id="award:anchored")
    sync(exa.ledger)
    exa.close()
    exb = ex_for(b)
    sync(exb.ledger)
    git(b, "gc", "-q", "--prune=now")
    git(b, "notes", "--ref", REF, "prune")
    exb.close()
    exb = ex_for(b)
    txns = exb.ledger.journal.read_all().txns
    assert "award:anchored" in {t.id for t in txns}
    exb.close()


def test_foreign_write_inside_our_lock_is_not_skipped_by_the_index(repo: Path) -> None:
    """Another writer (plain `git notes`) moves the ref after our catch-up: the CAS notices, we build on
    its tip, and the index still reads the foreign record."""

    from token_exchange.ledger.backends.notes import record_line

    assert tx("init", "--backend", "notes", cwd=repo).code == 0
    ex = ex_for(repo)
    ex.award("claude", SCALE, "t", "ours 1", id="award:ours1")
    first = ex.ledger.get("award:ours1")
    foreign = make_txn("award:foreign", "award", "world:rewards", "lambda", 4 * SCALE, agent="lambda",
                       description="written by git notes", ts=first.ts)
    foreign = foreign._replace(hash=foreign.compute_hash())
    anchor = blob_id(anchor_text(first.ts))
    with ex.ledger.locked():
        git(repo, "notes", "--ref", REF, "append", "-m", record_line(foreign), anchor)
        ex.ledger.append(make_txn("award:ours2", "award", "world:rewards", "claude", SCALE, agent="claude"))
    idx = ex.ledger.fresh()
    assert idx.get("award:foreign") is not None and idx.get("award:ours2") is not None
    assert idx.account("lambda") == START + 4 * SCALE
    assert check(ex.ledger).ok
    ex.close()


def _run_all(threads: list[threading.Thread]) -> None:
    """Start every thread, then wait for all of them (so they really run at once)."""
    for t in threads:
        t.start()
    for t in threads:
        t.join()
