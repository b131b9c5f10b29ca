"""Export the ledger (CSV/JSON) and import an export back, idempotently by id.

An export carries each transaction's ``prev`` and ``hash``.  An import verifies what it brings: every
row's hash must match its content and the rows must link (each ``prev`` is the hash before it; an
export of an unchained journal, git notes, has every ``prev`` empty).  That proves the file was not
edited after export; the hash has no key, so it cannot prove who wrote it (docs/ledger.md).  Rows
that do not verify (hand-written transactions, an edited export) are refused unless the operator
passes ``--unverified``; every import reports what it mints (the sum each account receives from a
``world:*`` account), so nothing is minted silently.
"""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, NamedTuple

from token_exchange.amounts import fmt, to_decimal
from token_exchange.errors import UserError
from token_exchange.ledger.timestamps import ts_micros
from token_exchange.ledger.txn import Txn, make_txn
from token_exchange.services.exchange import Exchange

CSV_FIELDS = ["id", "ts", "kind", "agent", "payer", "payee", "amount", "project", "description", "ref",
              "source", "breakdown", "prev", "hash"]
MAX_IMPORT_BYTES = 2 * 1024**3


def exported(ex: Exchange, since: str | None) -> list[Txn]:
    """Every transaction (at or after ``since``, an ISO 8601 time), oldest first."""
    floor = None
    if since:
        try:
            floor = ts_micros(since if ("+" in since or since.endswith("Z")) else since + "+00:00")
        except ValueError:
            raise UserError(f"--since {since[:40]!r} is not an ISO 8601 time") from None
    return [t for t in ex.ledger.fresh().iter_txns() if floor is None or ts_micros(t.ts) >= floor]


def export_json(txns: list[Txn]) -> dict[str, Any]:
    """The JSON export: every field, amounts as exact Decimal tokens."""
    rows = []
    for t in txns:
        d = t.to_json()
        d["amount"] = to_decimal(t.amount)
        rows.append(d)
    return {"transactions": rows}


def write_csv(txns: list[Txn], out: IO[str]) -> None:
    """The CSV export (``source`` and ``breakdown`` as JSON text)."""
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for t in txns:
        w.writerow({"id": t.id, "ts": t.ts, "kind": t.kind, "agent": t.agent, "payer": t.payer, "payee": t.payee,
                    "amount": fmt(t.amount), "project": t.project, "description": t.description, "ref": t.ref,
                    "source": json.dumps(t.source, sort_keys=True),
                    "breakdown": json.dumps(t.breakdown, sort_keys=True), "prev": t.prev, "hash": t.hash})


def _records(path: Path) -> list[dict[str, Any]]:
    try:
        if path.stat().st_size > MAX_IMPORT_BYTES:
            raise UserError(f"{path} is larger than 2 GiB")
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        except ValueError:  # an integer longer than int() converts (4,300 digits)
            raise UserError(f"{path}: a number with too many digits") from None
        rows = data.get("transactions") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise UserError(f"{path}: expected a list of transactions")
        return rows
    rows = []
    for n, row in enumerate(csv.DictReader(text.splitlines()), 2):
        try:
            row["source"] = json.loads(row.get("source") or "{}")
            row["breakdown"] = json.loads(row.get("breakdown") or "{}")
        except ValueError:  # not JSON (JSONDecodeError), or an integer too long to convert
            raise UserError(f"{path}:{n}: source/breakdown is not JSON") from None
        rows.append(row)
    return rows


def _no_constant(name: str) -> Any:
    raise UserError(f"{name} is not a valid amount")


def _txn(row: Any, n: int) -> tuple[Txn, str, str]:
    """A row -> (validated Txn without chain fields, its exported prev, its exported hash)."""
    if not isinstance(row, dict):
        raise UserError(f"transaction {n}: expected an object")
    try:
        from token_exchange.amounts import to_units

        amount = to_units(str(row["amount"]), what=f"transaction {n}: amount", allow_zero=True)
        t = make_txn(str(row["id"]), str(row["kind"]), str(row["payer"]), str(row["payee"]), amount,
                     agent=str(row.get("agent", "")), project=str(row.get("project", "")),
                     description=str(row.get("description", "")), source=dict(row.get("source") or {}),
                     breakdown=dict(row.get("breakdown") or {}), ref=str(row.get("ref", "")),
                     ts=str(row.get("ts", "")))
    except KeyError as e:
        raise UserError(f"transaction {n}: missing field {e}") from None
    except (TypeError, ValueError) as e:
        raise UserError(f"transaction {n}: {e}") from None
    except UserError as e:
        raise UserError(f"transaction {n}: {e}") from None
    return t, str(row.get("prev") or ""), str(row.get("hash") or "")


def unverified(rows: list[tuple[Txn, str, str]]) -> str:
    """"" when every row's hash matches its content and the rows link; else the first reason they do not."""
    chained = any(prev for _, prev, _ in rows)
    before = None
    for n, (t, prev, hash) in enumerate(rows, 1):
        if not hash:
            return f"transaction {n} ({t.id}) has no hash"
        if not t.ts:
            return f"transaction {n} ({t.id}) has no ts"
        if t._replace(prev=prev).compute_hash() != hash:
            return f"transaction {n} ({t.id}) does not match its hash (edited or hand-written)"
        if chained and before is not None and prev != before:
            return f"transaction {n} ({t.id}) does not follow the one before it (rows removed or reordered)"
        before = hash
    return ""


class Imported(NamedTuple):
    created: int
    existing: int
    verified: bool
    minted: dict[str, int]


def import_ledger(ex: Exchange, path: Path, allow_unverified: bool = False) -> Imported:
    """Verify and validate everything first, then append all new transactions in one atomic write."""
    rows = [_txn(row, n) for n, row in enumerate(_records(path), 1)]
    why = unverified(rows)
    if why and not allow_unverified:
        raise UserError(f"{path.name}: {why}; nothing imported (an import must verify: pass --unverified to import "
                        "hand-written transactions, and check what it says they mint)")
    txns = [t for t, _, _ in rows]
    minted: dict[str, int] = {}
    with ex.ledger.locked() as idx:
        running: dict[str, int] = {}
        for t in txns:
            if idx.get(t.id) is not None:
                continue
            if t.payer.startswith("world:"):
                minted[t.payee] = minted.get(t.payee, 0) + t.amount
            for acct, delta in ((t.payer, -t.amount), (t.payee, t.amount)):
                running[acct] = running.get(acct, idx.account(acct)) + delta
                if not acct.startswith("world:") and running[acct] < 0:
                    raise UserError(f"importing {t.id} would make {acct} negative; nothing imported")
        results = ex.ledger.append_many(txns, keep_dates=True)
    created = sum(r.created for r in results)
    return Imported(created, len(results) - created, not why, minted)
