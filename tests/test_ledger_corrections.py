"""Corrections (issue 13.7): `tx reverse` and `tx transfer`, and a negative award pointing to reverse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Clock, make_ex, tx_at
from token_exchange.amounts import SCALE
from token_exchange.errors import UserError
from token_exchange.ledger.doctor import check
from token_exchange.ledger.txn import make_txn
from token_exchange.rules.limits import LimitRefused
from token_exchange.services import corrections
from token_exchange.services.exchange import Exchange

NOW = "2026-01-01T12:00:00Z"


def tx(home: Path, *args: str):
    return tx_at(NOW, "--home", str(home), *args)


@pytest.fixture
def h(tmp_path: Path) -> Path:
    ex = make_ex(tmp_path / "h", Clock())
    ex.close()
    return ex.home


def bal(home: Path, agent: str) -> object:
    return json.loads(tx(home, "balance", agent, "--json").out)["balance"]


def test_reverse_is_idempotent_and_explains(h: Path) -> None:
    assert tx(h, "award", "zero", "40", "s", "oops", "--id", "a-1").code == 0
    assert bal(h, "zero") == 10040
    r = tx(h, "reverse", "a-1", "--reason", "paid twice", "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d == {**d, "id": "reversal:a-1", "kind": "reversal", "from": "zero", "to": "world:rewards", "amount": 40,
                 "created": True, "reverses": "a-1"}
    assert bal(h, "zero") == 10000
    again = tx(h, "reverse", "a-1", "--reason", "another reason")
    assert again.code == 0 and "already reversed" in again.err
    assert bal(h, "zero") == 10000
    r = tx(h, "reverse", "reversal:a-1", "--reason", "undo")
    assert r.code == 1 and "itself a reversal" in r.err and len(r.err.strip().splitlines()) == 1
    r = tx(h, "reverse", "no-such-id", "--reason", "x")
    assert r.code == 1 and "no transaction" in r.err
    r = tx(h, "reverse", "a-1", "--reason", "   ")
    assert r.code == 1 and "--reason" in r.err
    t = Exchange(h).ledger.get("reversal:a-1")
    assert t is not None and t.source["reverses"] == "a-1" and "paid twice" in t.description
    assert tx(h, "doctor").code == 0


def test_reverse_never_makes_a_wallet_negative_and_refuses_reservation_internals(h: Path) -> None:
    assert tx(h, "transfer", "zero", "claude", "300", "--id", "t1").code == 0
    ex = Exchange(h, clock=Clock())
    assert corrections.reverse(ex, "transfer:t1", "wrong agent").created
    assert bal(h, "claude") == 10000 and bal(h, "zero") == 10000
    ex.award("spark", 5 * SCALE, "s", "small", id="small")
    ex.ledger.append(make_txn("drain", "transfer", "spark", "zero", 10005 * SCALE, agent="spark"))
    before = (h / "ledger.toml").read_bytes()
    with pytest.raises(UserError, match="never makes a wallet negative"):
        corrections.reverse(ex, "small", "take it back")
    assert (h / "ledger.toml").read_bytes() == before
    r = tx(h, "llm", "reserve", "zero", "coding", "1000", "--id", "r1")
    assert r.code == 0, r.err
    r = tx(h, "reverse", "llm:r1:hold", "--reason", "x")
    assert r.code == 1 and "tx llm" in r.err


def test_transfer_moves_tokens_under_the_payers_limits(h: Path) -> None:
    r = tx(h, "transfer", "claude", "zero", "250", "--id", "t-1", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["created"] is True
    assert (bal(h, "claude"), bal(h, "zero")) == (9750, 10250)
    assert tx(h, "transfer", "claude", "zero", "250", "--id", "t-1").code == 0  # same id: once
    assert (bal(h, "claude"), bal(h, "zero")) == (9750, 10250)
    r = tx(h, "transfer", "claude", "zero", "600")  # claude's burst limit is 500
    assert r.code == 1 and "burst" in r.err.lower()
    assert tx(h, "transfer", "claude", "zero", "500").code == 0
    assert tx(h, "transfer", "claude", "zero", "300").code == 1  # hourly 1000: 250 + 500 used, 300 > 250 left
    assert tx(h, "transfer", "claude", "claude", "1").code == 1
    assert tx(h, "transfer", "claude", "nobody", "1").code == 1
    r = tx(h, "transfer", "claude", "zero", "-5")
    assert r.code == 1 and "negative" in r.err
    assert check(Exchange(h).ledger).ok


def test_transfers_count_in_the_spending_window(tmp_path: Path) -> None:
    clock = Clock()
    ex = make_ex(tmp_path / "h", clock)
    corrections.transfer(ex, "claude", "zero", 450 * SCALE, id="w1")
    corrections.transfer(ex, "claude", "zero", 450 * SCALE, id="w2")
    with pytest.raises(LimitRefused, match="Hourly"):
        corrections.transfer(ex, "claude", "zero", 450 * SCALE, id="w3")
    clock.advance(hours=1, seconds=1)
    assert corrections.transfer(ex, "claude", "zero", 450 * SCALE, id="w3").created


def test_a_negative_award_points_to_reverse(h: Path) -> None:
    before = (h / "ledger.toml").read_bytes()
    r = tx(h, "award", "zero", "-5", "s", "d")
    assert r.code == 1 and "tx reverse" in r.err and len(r.err.strip().splitlines()) == 1
    assert (h / "ledger.toml").read_bytes() == before
