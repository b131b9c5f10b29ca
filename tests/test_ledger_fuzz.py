"""Hostile input to the ledger (issue 13.10, the ledger side): damaged journals, import files and amounts
give one line and a non-zero exit, never a traceback, and change nothing.  Bounded hypothesis runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Clock, make_ex, tx_at

NOW = "2026-01-01T12:00:00Z"
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ex = make_ex(tmp_path_factory.mktemp("tpl") / "h", Clock())
    for i in range(3):
        ex.award("zero", (i + 1) * 10_000, "s", f"award {i}", id=f"a-{i}")
    ex.close()
    return ex.home


def fresh(template: Path, tmp: Path) -> Path:
    home = tmp / "h"
    if home.exists():
        shutil.rmtree(home)
    shutil.copytree(template, home)
    return home


def one_line_or_ok(r, report: bool = False) -> None:
    """Exit 0, 1 or 2, never a traceback; an error is one line (doctor's report may list several problems)."""
    assert r.code in (0, 1, 2), r
    assert "Traceback" not in r.err
    if r.code == 1 and not report:
        assert len(r.err.strip().splitlines()) == 1, r.err


@FUZZ
@given(st.integers(0, 4000), st.binary(max_size=80), st.booleans(), st.booleans())
def test_damaged_journal_never_tracebacks_and_reads_never_write(template: Path,
                                                                 tmp_path_factory: pytest.TempPathFactory, at: int,
                                                                 junk: bytes, replace: bool, drop_index: bool) -> None:
    home = fresh(template, tmp_path_factory.mktemp("j"))
    path = home / "ledger.toml"
    data = path.read_bytes()
    at = min(at, len(data))
    damaged = data[:at] + junk + data[at + (len(junk) if replace else 0):]
    path.write_bytes(damaged)
    if drop_index:
        (home / "index.sqlite").unlink()
    for args in (("balance", "zero", "--json"), ("history", "zero"), ("doctor",), ("export",)):
        r = tx_at(NOW, "--home", str(home), *args)
        one_line_or_ok(r, report=args[0] == "doctor")
        assert path.read_bytes() == damaged  # reading (and a plain doctor) never writes the journal


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.text(max_size=20)
                           | st.floats(allow_nan=True), lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)
row = st.fixed_dictionaries({"id": st.text(max_size=12) | st.integers(),
                             "kind": st.sampled_from(["award", "spend", "x"]),
                             "payer": st.sampled_from(["world:rewards", "zero", "", "pool:p"]),
                             "payee": st.sampled_from(["zero", "claude", "world:llm", "../x"]),
                             "amount": st.text(max_size=12) | st.integers(-10**20, 10**20) | json_values},
                            optional={"ts": st.text(max_size=30), "hash": st.text(max_size=64),
                                      "prev": st.text(max_size=64), "source": json_values, "breakdown": json_values})


@FUZZ
@given(st.lists(row, max_size=4) | json_values, st.booleans())
def test_hostile_import_files_change_nothing(template: Path, tmp_path_factory: pytest.TempPathFactory,
                                             doc: object, unverified: bool) -> None:
    tmp = tmp_path_factory.mktemp("i")
    home = fresh(template, tmp)
    before = (home / "ledger.toml").read_bytes()
    f = tmp / "in.json"
    f.write_text(json.dumps({"transactions": doc} if isinstance(doc, list) else doc, allow_nan=True))
    r = tx_at(NOW, "--home", str(home), "import", str(f), *(["--unverified"] if unverified else []))
    one_line_or_ok(r)
    if r.code != 0:
        assert (home / "ledger.toml").read_bytes() == before


LONG = "9" * 5000  # longer than int() converts (4,300 digits): json.loads raises a plain ValueError


@pytest.mark.parametrize("name,text", [
    ("in.json", f'{{"transactions": [{{"id": "x", "kind": "award", "amount": {LONG}}}]}}'),
    ("in.json", f"[{LONG}]"),
    ("in.csv", f'id,kind,payer,payee,amount,source,breakdown\nx,award,world:rewards,zero,1,"{{""a"": {LONG}}}",{{}}\n'),
    ("in.csv", f"id,kind,payer,payee,amount,source,breakdown\nx,award,world:rewards,zero,{LONG},{{}},{{}}\n"),
])
def test_import_files_with_numbers_too_long_to_convert(template: Path, tmp_path: Path, name: str, text: str) -> None:
    home = fresh(template, tmp_path)
    before = (home / "ledger.toml").read_bytes()
    f = tmp_path / name
    f.write_text(text)
    r = tx_at(NOW, "--home", str(home), "import", str(f))
    assert r.code == 1, r
    one_line_or_ok(r)
    assert (home / "ledger.toml").read_bytes() == before


@FUZZ
@given(st.text(max_size=30) | st.from_regex(r"-?[0-9]{1,40}(\.[0-9]{0,8})?", fullmatch=True),
       st.sampled_from(["award", "transfer", "reverse"]))
def test_hostile_amounts_and_ids(template: Path, tmp_path_factory: pytest.TempPathFactory, value: str,
                                 command: str) -> None:
    home = fresh(template, tmp_path_factory.mktemp("a"))
    before = (home / "ledger.toml").read_bytes()
    args = {"award": ["award", "zero", value, "s", "d"], "transfer": ["transfer", "zero", "claude", value],
            "reverse": ["reverse", value, "--reason", "fuzz"]}[command]
    r = tx_at(NOW, "--home", str(home), *args)
    one_line_or_ok(r)
    if r.code != 0:
        assert (home / "ledger.toml").read_bytes() == before
