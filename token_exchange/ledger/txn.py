"""Transactions: the immutable record, its validation, its hash, and the accounts it moves money between.

Every transaction moves ``amount`` units from ``payer`` to ``payee``; accounts are agent names,
``pool:NAME``, ``hold:ID`` and ``world:*`` (the outside), so the sum of all balances is always zero.
Timestamps are stored in one form (``ledger.timestamps``).  The tables (``source``, ``breakdown``) ``make_txn``
checked are read-only ``Table``s, so the record is immutable all the way down.
"""

# No ``from __future__ import annotations``: NamedTuple fields are real types here (docs/DEVELOPING.md, Hot paths).

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from token_exchange.amounts import MAX_UNITS, Units, fmt, to_decimal, to_units
from token_exchange.errors import UserError, clean_text
from token_exchange.ledger.timestamps import check_ts, ts_micros

# open: starting balance; earn: commit; award: direct/issue; spend: LLM charge; hold/settle/release:
# two-phase reservations; contribute/pool_spend/refund/credit: pools; transfer: agent to agent;
# reversal: corrections (services/corrections.py); pool: a zero-amount pool metadata record.
# Settlement (services/settlement.py): provisional: an award recorded before the commit lands; void: it taken
# back in full (the commit settled or the award expired); clawback: a settled award reversed (its commit was
# reverted); marker: a zero-amount record of how far the default branch was settled.
KINDS = ("open", "earn", "award", "spend", "hold", "settle", "release", "transfer", "contribute", "pool_spend",
         "refund", "credit", "reversal", "pool", "link", "provisional", "void", "clawback", "marker")
DEBT_KINDS = ("void", "clawback")  # may take an agent below zero: the award they reverse was already spent
EARN_KINDS = ("earn", "award")
SPEND_KINDS = ("spend", "settle")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+=-]{0,199}")
ACCOUNT_RE = re.compile(r"(world|pool|hold):[A-Za-z0-9_.:@/+=-]{1,200}|[a-z0-9][a-z0-9_.-]{0,63}")
META_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")
GENESIS = "world:genesis"
REWARDS = "world:rewards"
LLM = "world:llm"


def untimed(txns: Sequence["Txn"], error: ValueError) -> UserError:
    """The one-line refusal of journal records one of which has a ``ts`` that is no time (``ts_micros`` raised
    ``error``): only an edited journal whose blocks still verify holds one.  ``error`` itself if none has."""
    for t in txns:
        try:
            ts_micros(t.ts)
        except ValueError as e:
            return UserError(f"transaction {t.id[:60]} in the journal has ts {t.ts[:40]!r}, which is not a time "
                             f"({e}); run `tx doctor`")
    raise error


def is_agent_account(account: str) -> bool:
    return ":" not in account


def digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(obj).encode("utf-8")).hexdigest()


_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
_ENC_STR = json.encoder.encode_basestring  # what that encoder uses for str with ensure_ascii=False (C)


def canonical(obj: dict[str, Any]) -> str:
    """The exact text a hash covers: sorted keys, no spaces, raw UTF-8 (``json.dumps`` with those options)."""
    return _CANONICAL.encode(obj)


def canonical_table(m: dict[str, Any]) -> str:
    """``canonical`` of a source/breakdown table (text or whole-number values; TypeError otherwise)."""
    if not m:
        return "{}"
    parts = []
    for k in sorted(m):
        v = m[k]
        if type(v) is str:
            parts.append(_ENC_STR(k) + ":" + _ENC_STR(v))
        elif type(v) is int:
            parts.append(_ENC_STR(k) + ":" + int.__repr__(v))
        else:
            raise TypeError("not text or a whole number")
    return "{" + ",".join(parts) + "}"


def canonical_hashed(d: dict[str, Any]) -> str:
    """``canonical(d)`` for a dict of exactly ``Txn.hashed()``'s keys, assembled directly (about twice as fast
    as the general encoder; a rebuild does this once per transaction).  Equal by construction: the same
    string escaper, the same sorted key order; tests/test_ledger_rebuild.py checks it on random input."""
    e = _ENC_STR
    try:
        return ('{"agent":' + e(d["agent"]) + ',"amount":' + int.__repr__(d["amount"]) + ',"breakdown":'
                + canonical_table(d["breakdown"]) + ',"description":' + e(d["description"]) + ',"id":' + e(d["id"])
                + ',"kind":' + e(d["kind"]) + ',"payee":' + e(d["payee"]) + ',"payer":' + e(d["payer"])
                + ',"prev":' + e(d["prev"]) + ',"project":' + e(d["project"]) + ',"ref":' + e(d["ref"])
                + ',"source":' + canonical_table(d["source"]) + ',"ts":' + e(d["ts"]) + "}")
    except TypeError:
        return canonical(d)


class Txn(NamedTuple):
    """One immutable transaction.  ``hash`` chains it to ``prev`` (tamper evidence, see docs/ledger.md)."""

    id: str
    kind: str
    payer: str
    payee: str
    amount: Units
    agent: str = ""
    project: str = ""
    description: str = ""
    source: dict[str, Any] = {}  # never mutated: make_txn and readers always pass their own dicts
    breakdown: dict[str, Any] = {}
    ref: str = ""
    ts: str = ""
    prev: str = ""
    hash: str = ""

    def content(self) -> dict[str, Any]:
        """The fields that make two writes of one id 'the same' (no time, no chain)."""
        return {"id": self.id, "kind": self.kind, "payer": self.payer, "payee": self.payee,
                "amount": self.amount, "agent": self.agent, "project": self.project,
                "description": self.description, "source": self.source, "breakdown": self.breakdown,
                "ref": self.ref}

    def fingerprint(self) -> str:
        return digest(self.content())

    def dated(self, ts: str) -> "Txn":
        """This transaction dated ``ts``: ``_replace(ts=ts)`` without its keyword handling (every write dates one)."""
        return Txn._make((*self[:11], ts, *self[12:]))

    def hashed(self) -> dict[str, Any]:
        """What ``hash`` covers: the content plus time and chain link."""
        return {"id": self.id, "kind": self.kind, "payer": self.payer, "payee": self.payee,
                "amount": self.amount, "agent": self.agent, "project": self.project,
                "description": self.description, "source": self.source, "breakdown": self.breakdown,
                "ref": self.ref, "ts": self.ts, "prev": self.prev}

    def compute_hash(self) -> str:
        return digest(self.hashed())

    def to_json(self) -> dict[str, Any]:
        d = self.content()
        d["amount"] = fmt(self.amount)
        d.update(ts=self.ts, prev=self.prev, hash=self.hash)
        return d

    def for_json(self) -> dict[str, Any]:
        """A JSON encoder would otherwise encode this NamedTuple field by field (amount in units)."""
        return self.to_json()

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Txn":
        return cls(id=d["id"], kind=d["kind"], payer=d["payer"], payee=d["payee"],
                   amount=to_units(str(d["amount"]), what="amount", allow_zero=True),
                   agent=d.get("agent", ""), project=d.get("project", ""), description=d.get("description", ""),
                   source=dict(d.get("source", {})), breakdown=dict(d.get("breakdown", {})), ref=d.get("ref", ""),
                   ts=d.get("ts", ""), prev=d.get("prev", ""), hash=d.get("hash", ""))

    @classmethod
    def from_hashed(cls, d: dict[str, Any], hash: str) -> "Txn":
        """From ``hashed()`` (amount in units), as the index stores it."""
        return cls(d["id"], d["kind"], d["payer"], d["payee"], d["amount"], d["agent"], d["project"],
                   d["description"], d["source"], d["breakdown"], d["ref"], d["ts"], d["prev"], hash)


# Exact-``str`` accounts and table keys that passed their pattern: a ledger names a few hundred of them
# millions of times, so each is matched once (a set probe after that).  Only exact ``str`` values are kept (a
# subclass could hash and compare differently); cleared when full, so hostile input cannot grow them.
_VALID_ACCOUNTS: set[str] = set()
_VALID_META_KEYS: set[str] = set()
_VALID_MAX = 8192
_MAX_META_INT = 2**53 - 1


def _matched(value: object, pattern: re.Pattern[str], seen: set[str]) -> bool:
    """``value`` is text ``pattern`` matches whole (remembered in ``seen`` when it is an exact ``str``)."""
    if type(value) is str and value in seen:
        return True
    if not isinstance(value, str) or not pattern.fullmatch(value):
        return False
    if type(value) is str:
        if len(seen) >= _VALID_MAX:
            seen.clear()
        seen.add(value)
    return True


class Table(dict[str, Any]):
    """A table as ``make_txn`` checked it (exact ``str`` keys, exact ``str``/``int`` values), read-only since: the
    ledger's write check trusts it; any other dict is looked at whole.  ``dict(table)`` is a writable copy."""
    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a transaction's table is read-only (copy it with dict(table))")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only

    def __reduce__(self) -> tuple[Any, ...]:  # pickle and copy rebuild it whole (item by item would raise)
        return (Table, (dict(self),))


def _table(name: str, meta: Any) -> dict[str, Any]:
    """A checked copy of a source/breakdown table: keys match ``META_KEY_RE``, values are text (cleaned, in
    ``meta`` too) or whole numbers within +-(2^53 - 1).  A table whose keys were all matched before (the usual
    table: the same few keys on every write) is one subset test for them.  A ``Table`` unless a key or value is
    a ``str``/``int`` subclass (tomlkit's items): a plain dict then."""
    if not isinstance(meta, dict):
        raise UserError(f"{name} must be a table of text or whole numbers")
    keys_known = _VALID_META_KEYS.issuperset(meta)  # then each exact ``str`` key is one of them
    exact = True
    for k, v in meta.items():
        if not (keys_known and type(k) is str):
            if not _matched(k, META_KEY_RE, _VALID_META_KEYS):
                raise UserError(f"invalid {name} key {str(k)[:40]!r}")
            exact = exact and type(k) is str
        kind_v = type(v)
        if kind_v is str:
            if not (len(v) <= 500 and v.isprintable()):
                meta[k] = clean_text(v, limit=500)
            continue
        if kind_v is int:
            if v > _MAX_META_INT or v < -_MAX_META_INT:
                raise UserError(f"{name}.{k} is outside +-(2^53 - 1)")
            continue
        if isinstance(v, (float, bool)) or not isinstance(v, (str, int)):
            raise UserError(f"{name}.{k} must be text or a whole number")
        if isinstance(v, int) and abs(v) > _MAX_META_INT:
            raise UserError(f"{name}.{k} is outside +-(2^53 - 1)")
        if isinstance(v, str) and not (len(v) <= 500 and v.isprintable()):
            meta[k] = clean_text(v, limit=500)
        exact = exact and type(meta[k]) in (str, int)
    return Table(meta) if exact else dict(meta)


def make_txn(id: str, kind: str, payer: str, payee: str, amount: Units, *, agent: str = "", project: str = "",
             description: str = "", source: dict[str, Any] | None = None, breakdown: dict[str, Any] | None = None,
             ref: str = "", ts: str = "", prev: str = "", hash: str = "") -> Txn:
    """Build a validated transaction; raises UserError on anything malformed.

    Every field is checked on every call; what is cheaper than the general check is only a shortcut to the
    same answer: exact ``int``/``str`` table values skip the ``isinstance`` ladder, and an account or table key
    already matched is a set probe (``_matched``)."""
    if not isinstance(id, str) or not ID_RE.fullmatch(id):
        raise UserError(f"invalid transaction id {str(id)[:60]!r} (1-200 of A-Z a-z 0-9 _ . : @ / + = -)")
    if kind not in KINDS:
        raise UserError(f"invalid transaction kind {str(kind)[:40]!r}")
    for acct in (payer, payee):
        if not _matched(acct, ACCOUNT_RE, _VALID_ACCOUNTS):
            raise UserError(f"invalid account {str(acct)[:60]!r}")
    if payer == payee:
        raise UserError("payer and payee must differ")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_UNITS:
        raise UserError(f"invalid amount {str(amount)[:40]!r} (0 to {fmt(MAX_UNITS)} tokens)")
    source = _table("source", source or {})
    breakdown = _table("breakdown", breakdown or {})
    agent, project, description, ref = _text(agent, 64), _text(project, 200), _text(description, 500), _text(ref, 200)
    if ts:
        check_ts(ts)
    return Txn(id, kind, payer, payee, amount, agent, project, description, source, breakdown, ref, ts, prev, hash)


def _text(value: Any, limit: int) -> Any:
    """A short text field: an exact, printable ``str`` within ``limit`` as it is; any other value but None
    cleaned (``clean_text`` of its text)."""
    if value is None or (type(value) is str and len(value) <= limit and value.isprintable()):
        return value
    return clean_text(str(value), limit=limit)


def chain(txns: list[Txn], last_hash: str) -> list[Txn]:
    """Link ``txns`` after ``last_hash``: each one's ``prev`` is the hash before it (a hash chain)."""
    out = []
    prev = last_hash
    for t in txns:
        t = t._replace(prev=prev, hash="")
        t = t._replace(hash=t.compute_hash())
        prev = t.hash
        out.append(t)
    return out


def chain_problems(txns: list[Txn]) -> list[str]:
    """Every break in a chained journal read in full: a ``prev`` that is not the hash before it, an id
    written twice (what doctor reports for the chained backends)."""
    problems: list[str] = []
    prev = ""
    seen: set[str] = set()
    for n, t in enumerate(txns):
        if t.prev != prev:
            problems.append(f"transaction {n} ({t.id}): chain broken (entry edited, removed or reordered)")
        prev = t.hash
        if t.id in seen:
            problems.append(f"transaction {n}: id {t.id} appears twice")
        seen.add(t.id)
    return problems


class Appended(NamedTuple):
    """Outcome of an append: ``created`` False means the id existed with equal content."""

    txn: Txn
    created: bool


class Balance(NamedTuple):
    agent: str
    balance: Units
    earned: Units
    spent: Units
    by_kind: dict[str, Units]
    projects: dict[str, Units]

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "balance": to_decimal(self.balance), "earned": to_decimal(self.earned),
                "spent": to_decimal(self.spent),
                "by_kind": {k: to_decimal(v) for k, v in sorted(self.by_kind.items())},
                "projects": {k: to_decimal(v) for k, v in sorted(self.projects.items())}}

    def for_json(self) -> dict[str, Any]:
        return self.to_json()
