"""Honest tamper evidence (issue 13.6): checkpoints in git catch a recomputed chain and deleted blocks;
imports verify what they bring and say what they mint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import git, tx_at
from token_exchange.ledger.backends.toml import HEADER, TomlJournal, render_batch
from token_exchange.ledger.checkpoint import BRANCH, REF
from token_exchange.ledger.txn import chain

NOW = "2026-01-01T12:00:00Z"


def tx(home: Path, *args: str):
    return tx_at(NOW, "--home", str(home), *args)


@pytest.fixture
def setup(repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    home = repo / ".exchange"
    assert tx(home, "init").code == 0
    for i in range(4):
        assert tx(home, "award", "zero", str(5 * (i + 1)), "bd", f"issue {i}", "--id", f"a-{i}").code == 0
    return home, remote


def recompute_chain_with(home: Path, edit_id: str, amount: int) -> None:
    """What an agent can do without any key: edit an amount and recompute every hash after it."""
    txns = TomlJournal(home).read_all().txns
    txns = chain([t._replace(amount=amount) if t.id == edit_id else t for t in txns], "")
    (home / "ledger.toml").write_bytes(HEADER + render_batch(txns))
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (home / name).unlink(missing_ok=True)


def test_a_recomputed_chain_passes_the_hashes_but_not_the_checkpoint(setup: tuple[Path, Path], repo: Path) -> None:
    home, remote = setup
    r = tx(home, "checkpoint", "--push", "origin", "--json")
    assert r.code == 0, r.err
    cp = json.loads(r.out)
    assert cp["count"] == 10 and cp["created"] and cp["pushed"] == "origin"
    assert git(remote, "rev-parse", REF).strip() == cp["commit"]
    assert json.loads(tx(home, "checkpoint", "--json").out)["created"] is False  # nothing new: no new commit
    assert tx(home, "doctor").code == 0
    recompute_chain_with(home, "a-1", 50000 * 10_000)
    r = tx(home, "doctor", "--json")
    rep = json.loads(r.out)
    assert r.code == 1 and any("checkpoint" in p and "no longer holds" in p for p in rep["problems"]), rep
    assert not any("hash" in p and "first bad block" in p for p in rep["problems"])  # the chain itself is fine
    # the agent also deletes every local copy of the checkpoints: the remote still has them
    git(repo, "update-ref", "-d", REF)
    git(repo, "update-ref", "-d", f"refs/remotes/origin/{BRANCH}")
    assert tx(home, "doctor").code == 0  # nothing left locally to compare with
    r = tx(home, "doctor", "--remote", "origin", "--json")
    assert r.code == 1 and any("no longer holds" in p for p in json.loads(r.out)["problems"])


def test_deleting_the_last_blocks_is_caught_without_the_index(setup: tuple[Path, Path]) -> None:
    home, _ = setup
    assert tx(home, "checkpoint").code == 0
    path = home / "ledger.toml"
    text = path.read_text()
    path.write_text(text[: text.rindex("# batch")])  # the last batch, gone
    (home / "index.sqlite").unlink()
    r = tx(home, "doctor", "--json")
    assert r.code == 1 and any("missing" in p for p in json.loads(r.out)["problems"])


def test_a_force_pushed_remote_history_is_reported(setup: tuple[Path, Path], repo: Path, tmp_path: Path) -> None:
    home, remote = setup
    assert tx(home, "checkpoint", "--push", "origin").code == 0
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    git(other, "checkout", "-q", "--orphan", "rewrite")
    (other / "checkpoint.json").write_text("{}\n")
    git(other, "add", "checkpoint.json")
    git(other, "commit", "-q", "-m", "forged")
    git(other, "push", "-q", "--force", "origin", f"HEAD:{REF}")
    r = tx(home, "doctor", "--remote", "origin", "--json")
    assert r.code == 1 and any("force-pushed" in p for p in json.loads(r.out)["problems"])


def test_checkpoints_need_the_repository_of_the_home(tmp_path: Path) -> None:
    home = tmp_path / "loose"
    assert tx(home, "init").code == 0
    r = tx(home, "checkpoint")
    assert r.code == 1 and "git repository" in r.err


# --- imports verify what they bring -------------------------------------------------------------------
def test_imports_verify_and_say_what_they_mint(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for h in (src, dst):
        assert tx(h, "init").code == 0
    assert tx(src, "award", "zero", "12.5", "bd", "x", "--id", "a-1").code == 0
    for fmt in ("json", "csv"):
        f = tmp_path / f"export.{fmt}"
        f.write_text(tx(src, "export", "--format", fmt).out)
        r = tx(dst, "import", str(f), "--json")
        assert r.code == 0, r.err
        d = json.loads(r.out)
        assert d["verified"] is True
    assert json.loads(tx(dst, "balance", "zero", "--json").out)["balance"] == 10012.5
    edited = tmp_path / "edited.json"
    data = json.loads((tmp_path / "export.json").read_text())
    for row in data["transactions"]:
        if row["id"] == "a-1":
            row["id"], row["amount"] = "a-2", 999
    edited.write_text(json.dumps(data))
    before = (dst / "ledger.toml").read_bytes()
    r = tx(dst, "import", str(edited))
    assert r.code == 1 and "does not match its hash" in r.err and "--unverified" in r.err
    assert (dst / "ledger.toml").read_bytes() == before
    hand = tmp_path / "hand.json"
    hand.write_text(json.dumps({"transactions": [
        {"id": "gift-1", "kind": "award", "payer": "world:rewards", "payee": "spark", "amount": "700",
         "agent": "spark"},
        {"id": "gift-2", "kind": "award", "payer": "world:rewards", "payee": "zero", "amount": "0.5",
         "agent": "zero"}]}))
    r = tx(dst, "import", str(hand))
    assert r.code == 1 and "has no hash" in r.err
    r = tx(dst, "import", str(hand), "--unverified", "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d["verified"] is False and d["minted"] == {"spark": 700, "zero": 0.5}
    r = tx(dst, "import", str(hand), "--unverified")
    assert r.code == 0 and "already present" in r.err and "minted" not in r.err  # nothing new, nothing minted
