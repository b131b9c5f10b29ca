"""`tx dashboard` and `tx plot` on a real ledger: the page's content, self-containment and escaping."""

from __future__ import annotations

import html.parser
import importlib.util
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from token_exchange.amounts import fmt, to_units
from token_exchange.ledger.txn import LLM, make_txn
from token_exchange.services.exchange import Exchange
from token_exchange.viz.dashboard import render_html
from token_exchange.viz.summary import collect, downsample

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class Page(html.parser.HTMLParser):
    """Collects tags, attributes, section ids and table cells per section."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.sections: dict[str, list[list[str]]] = {}
        self.section: str | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self.section = a.get("id") or ""
            self.sections[self.section] = []
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append("".join(self.cell))
            self.cell = None
        elif tag == "tr" and self.row is not None and self.section is not None:
            self.sections[self.section].append(self.row)
            self.row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.cell is not None:
            self.cell.append(data)


def parse(text: str) -> Page:
    p = Page()
    p.feed(text)
    return p


@pytest.fixture
def ledger_home(home: Path) -> Path:
    """A ledger with commits, a hostile award, LLM spends and a pool-shaped transfer."""
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    now = [t0]
    ex = Exchange(home, clock=lambda: now[0])
    for i, (who, project, msg) in enumerate([("claude", "nexushive-setup", "fix: wallet race"),
                                             ("builder", "scheme-lsp", "test: parser coverage"),
                                             ("zero", "dotfiles", "docs: readme")]):
        now[0] = t0 + timedelta(minutes=10 * i)
        ex.commit(f"{who}@aygp-dr.ai", project, msg, reward_id=f"r{i}")
    now[0] = t0 + timedelta(hours=1)
    ex.award("spark", to_units("42.5"), "bd", HOSTILE, id="a1", project=HOSTILE)
    with ex.ledger.locked():
        ex.ledger.append(make_txn("s1", "spend", "claude", LLM, to_units("75"), agent="claude",
                                  description="opus", breakdown={"model": "claude-opus", "tokens": 5000}))
        ex.ledger.append(make_txn("s2", "spend", "zero", LLM, to_units("0.5"), agent="zero",
                                  description="llama", breakdown={"model": "llama3.2", "tokens": 5000}))
    ex.close()
    return home


def test_dashboard_content_matches_ledger(cli, ledger_home: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    r = cli("--home", str(ledger_home), "dashboard", "--out", str(report))
    assert r.code == 0, r.err
    text = report.read_text("utf-8")
    page = parse(text)
    for sid in ("balances", "balances-over-time", "earnings-vs-spending", "earnings-by-source", "spend-by-model",
                "pools", "limit-events", "recent"):
        assert sid in page.sections, sid
    # numbers in the balances table equal the ledger's
    ex = Exchange(ledger_home)
    rows = {row[0]: row for row in page.sections["balances"][1:]}
    assert set(rows) == set(ex.cfg.agents)
    for b in ex.balances():
        assert rows[b.agent][2] == fmt(b.earned)
        assert rows[b.agent][3] == fmt(b.spent)
        assert rows[b.agent][5] == fmt(b.balance)
    assert rows["spark"][2] == "42.5"
    assert rows["claude"][3] == "75"
    models = {row[0]: row for row in page.sections["spend-by-model"][1:]}
    assert models["claude-opus"][3] == "75" and models["claude-opus"][2] == "5,000"
    assert models["llama3.2"][3] == "0.5"
    recent = page.sections["recent"][1:]
    assert len(recent) == ex.ledger.fresh().count()


def test_dashboard_is_self_contained_and_escapes(cli, ledger_home: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    assert cli("--home", str(ledger_home), "dashboard", "--out", str(report)).code == 0
    text = report.read_text("utf-8")
    page = parse(text)
    assert not [t for t, _ in page.tags if t in ("script", "iframe", "object", "embed", "link", "img", "base")]
    for _tag, attrs in page.tags:
        for k, v in attrs.items():
            assert not k.startswith("on"), k
            assert k not in ("src", "href"), (k, v)
    # the only URL is the SVG namespace identifier (never fetched)
    assert set(re.findall(r"https?://[^\s\"'<>]+", text)) <= {"http://www.w3.org/2000/svg"}
    assert "url(" not in text and "@import" not in text
    # hostile agent-supplied text is escaped, and still readable as text
    assert "<script>alert" not in text and "<img src=x" not in text
    assert "&lt;script&gt;" in text
    assert HOSTILE in "".join(page.text)


def test_dashboard_json_and_errors(cli, ledger_home: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.html"
    r = cli("--home", str(ledger_home), "dashboard", "--out", str(report), "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["out"] == str(report) and data["simulated"] is False
    spark = next(a for a in data["agents"] if a["agent"] == "spark")
    assert str(spark["earned"]) == "42.5"
    r = cli("--home", str(ledger_home), "dashboard", "--out", str(tmp_path / "missing" / "r.html"))
    assert r.code == 1 and "does not exist" in r.err and len(r.err.strip().splitlines()) == 1


def test_empty_ledger_renders(home: Path) -> None:
    ex = Exchange(home)
    s = collect(ex.ledger.fresh(), list(ex.cfg.agents))
    page = parse(render_html(s))
    assert "balances" in page.sections and "recent" in page.sections


def test_downsample_keeps_last_point() -> None:
    pts = [(i, i * 3) for i in range(10_000)]
    out = downsample(pts, 100)
    assert len(out) <= 100 and out[-1] == pts[-1] and out == sorted(out)


def test_plot_missing_matplotlib_is_one_clear_line(cli, ledger_home: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = cli("--home", str(ledger_home), "plot", str(tmp_path / "p.png"))
    assert r.code == 1
    assert r.err.strip().splitlines() == ["tx: error: plotting needs matplotlib: pip install "
                                          "'token-exchange[plot]' (or pip install matplotlib)"]
    assert not (tmp_path / "p.png").exists()


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib not installed")
def test_plot_writes_png(cli, ledger_home: Path, tmp_path: Path) -> None:
    png = tmp_path / "p.png"
    r = cli("--home", str(ledger_home), "plot", str(png), "--json")
    assert r.code == 0, r.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r.json()["transactions"] > 0
    r = cli("--home", str(ledger_home), "plot", str(tmp_path / "p.jpg"))
    assert r.code == 1 and "PNG" in r.err
