"""`tx report`: real repositories laid out like pull requests (base branch, feature branch, merge base)."""

from __future__ import annotations

import json
import re
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import git, tx
from token_exchange.errors import UserError
from token_exchange.report import build as rep
from token_exchange.report import range as history
from token_exchange.report import render
from token_exchange.services import revision

CONFIG = """\
[exchange]
backend = "toml"
starting_balance = 1000
project = "webapp"

[agents.claude]
base_rate = 150
primary_llm = "m"

[agents.builder]
base_rate = 120
primary_llm = "m"
emails = ["bob@example.com"]

[models]
m = { cost_per_1k = 1 }

[[contracts]]
name = "webapp"
multiplier = 2.0
budget = {budget}

[[contracts]]
name = "default"
multiplier = 1.0
budget = 10000

[[bonuses]]
name = "emergency"
keywords = ["hotfix", "security"]
multiplier = 2.0

[[bonuses]]
name = "bugfix"
keywords = ["fix", "bug"]
multiplier = 1.5

[commit_rules]
pay_merges = false
pay_fixups = false
pay_reverts = false
"""

CLAUDE = {"GIT_AUTHOR_NAME": "Claude", "GIT_AUTHOR_EMAIL": "claude@aygp-dr.ai"}
BUILDER = {"GIT_AUTHOR_NAME": "Bob", "GIT_AUTHOR_EMAIL": "bob@example.com"}
HUMAN = {"GIT_AUTHOR_NAME": "Mallory", "GIT_AUTHOR_EMAIL": "mallory@example.org"}


@pytest.fixture(autouse=True)
def fixed_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_AUTHOR_DATE", "2026-01-02T03:04:05+00:00")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2026-01-02T03:04:05+00:00")


def commit(repo: Path, message: str, who: dict[str, str] | None = None, path: str | None = None,
           content: str | None = None) -> str:
    if path is not None:
        f = repo / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(content if content is not None else message + "\n")
        git(repo, "add", path)
        git(repo, "commit", "-q", "--no-verify", "-m", message, env=who)
    else:
        git(repo, "commit", "-q", "--no-verify", "--allow-empty", "-m", message, env=who)
    return git(repo, "rev-parse", "HEAD").strip()


def make_pr(tmp_path: Path, budget: int = 50000, name: str = "webapp") -> Path:
    """main: config + 2 commits; feature branches off main~1; main then moves on (merge base != base)."""
    repo = tmp_path / name
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / ".exchange").mkdir()
    (repo / ".exchange" / "config.toml").write_text(CONFIG.replace("{budget}", str(budget)))
    git(repo, "add", ".exchange/config.toml")
    git(repo, "commit", "-q", "--no-verify", "-m", "add exchange config")
    commit(repo, "docs: on main before the branch", CLAUDE, "a.txt")
    git(repo, "checkout", "-q", "-b", "feature")
    git(repo, "checkout", "-q", "main")
    commit(repo, "fix: on main after the branch point", CLAUDE, "b.txt")
    git(repo, "checkout", "-q", "feature")
    return repo


def report_json(repo: Path, *args: str) -> dict:
    r = tx("report", "--base", "main", "--head", "feature", "--json", *args, cwd=repo)
    assert r.code == 0, r.err
    return json.loads(r.out, parse_float=Decimal)


def test_range_is_merge_base_to_head_with_breakdown_and_totals(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    c1 = commit(repo, "fix: parser bug", CLAUDE, "p.py")
    c2 = commit(repo, "feat: exporter", BUILDER, "e.py")
    c3 = commit(repo, "chore: tidy", HUMAN, "t.py")
    d = report_json(repo)
    assert [c["sha"] for c in d["commits"]] == [c1, c2, c3]  # not main's post-branch commit
    assert d["merge_base"] == git(repo, "merge-base", "main", "feature").strip()
    assert d["merge_base"] != d["base"]
    first = d["commits"][0]
    assert first["agents"] == ["claude"] and first["amount"] == Decimal(450)  # 150 x 2.0 x 1.5
    assert first["breakdown"] == {"base_rate": "150", "contract": "webapp", "multiplier": "2.0", "bonus": "1.5",
                                  "gross": "450", "budget_left": "50000", "keyword": "fix", "bonus_group": "bugfix"}
    assert d["commits"][1]["agents"] == ["builder"] and d["commits"][1]["amount"] == Decimal(240)  # emails list
    assert d["commits"][2]["unmatched"] is True and d["commits"][2]["amount"] == 0
    assert d["agents"] == {"builder": {"commits": 1, "amount": 240, "paid": 0, "due": 240},
                           "claude": {"commits": 1, "amount": 450, "paid": 0, "due": 450}}
    assert d["total"] == Decimal(690)
    assert d["contracts"] == [{"name": "webapp", "multiplier": "2.0", "budget": 50000, "paid_before": 0,
                               "this_pr": 690, "left": 49310}]
    assert d["unmatched"] == [{"email": "mallory@example.org", "commits": 1, "hint": rep.HINT}]
    assert d["ledger"] is None and "status" not in first
    # reward ids: patch-id based (no trailer), one per commit, distinct
    assert all(c["reward_id"].startswith("patch-") for c in d["commits"])
    assert len({c["reward_id"] for c in d["commits"]}) == 3


def test_text_and_markdown_formats(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    commit(repo, "fix: parser bug", CLAUDE, "p.py")
    commit(repo, "chore: tidy", HUMAN, "t.py")
    t = tx("report", "--base", "main", "--head", "feature", cwd=repo)
    assert t.code == 0, t.err
    assert "total: 450 tokens" in t.out and "mallory@example.org" in t.out and rep.HINT in t.out
    m = tx("report", "--base", "main", "--head", "feature", "--format", "markdown", cwd=repo)
    assert m.code == 0 and m.out.startswith(rep.MARKER + "\n")
    assert "**Total: 450 tokens**" in m.out and "### Unmatched authors" in m.out
    assert "### Rule changes in this PR" not in m.out


def test_coauthors_split_equally_with_largest_remainder(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    msg = ("feat: pair work\n\nCo-authored-by: Bob <bob@example.com>\n"
           "Co-authored-by: Someone <nobody@example.net>\nCo-authored-by: Claude again <claude@aygp-dr.ai>")
    commit(repo, msg, CLAUDE, "x.py")
    commit(repo, "feat: odd split\n\nCo-authored-by: B <builder@aygp-dr.ai>", {**CLAUDE}, "y.py")
    d = report_json(repo)
    c = d["commits"][0]
    assert c["agents"] == ["claude", "builder"]  # lead = author; its base rate prices the commit
    assert c["amount"] == 300 and c["shares"] == {"claude": 150, "builder": 150}
    assert d["commits"][1]["shares"] == {"claude": 150, "builder": 150}


def test_exclusions_merges_fixups_reverts(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    commit(repo, "fix: first", CLAUDE, "f.py")
    commit(repo, "fixup! fix: first", CLAUDE, "f.py", "changed\n")
    commit(repo, "squash! fix: first", CLAUDE, "f.py", "changed again\n")
    doomed = commit(repo, "feat: to be reverted", CLAUDE, "r.py")
    git(repo, "revert", "--no-edit", doomed, env=CLAUDE)
    git(repo, "merge", "-q", "--no-ff", "--no-verify", "-m", "Merge branch main into feature", "main", env=CLAUDE)
    d = report_json(repo)
    by = {c["subject"].split(" ")[0]: c for c in d["commits"]}
    assert by["fix:"]["amount"] == 450
    assert by["fixup!"]["excluded"] == "fixup/squash commit" and by["fixup!"]["amount"] == 0
    assert by["squash!"]["excluded"] == "fixup/squash commit"
    assert by["Revert"]["excluded"] == "revert"
    merge = by["Merge"]
    assert merge["parents"] == 2 and merge["excluded"] == "merge commit" and merge["amount"] == 0
    assert merge["reward_id"] == "sha-" + merge["sha"]
    # after merging main in, merge-base(main, feature) is main itself: main's commits are outside the range
    assert "fix: on main after the branch point" not in [c["subject"] for c in d["commits"]]
    assert by["feat:"]["amount"] == 300
    assert d["total"] == 750


def test_budget_cap_applies_across_commits_oldest_first(tmp_path: Path) -> None:
    repo = make_pr(tmp_path, budget=700)
    commit(repo, "fix: one", CLAUDE, "1.py")  # 450
    commit(repo, "fix: two", CLAUDE, "2.py")  # 450 -> capped to 250
    commit(repo, "fix: three", CLAUDE, "3.py")  # 0
    d = report_json(repo)
    amounts = [c["amount"] for c in d["commits"]]
    assert amounts == [450, 250, 0]
    assert d["commits"][1]["breakdown"]["capped"] == 1 and d["commits"][1]["breakdown"]["budget_left"] == "250"
    assert "capped from 450 to the 250 left" in d["commits"][1]["reason"]
    assert d["contracts"][0]["left"] == 0 and d["contracts"][0]["this_pr"] == 700
    md = tx("report", "--base", "main", "--head", "feature", "--format", "markdown", cwd=repo).out
    assert "capped from 450 by the budget" in md and "budget exhausted" in md


def test_pr_that_edits_the_config_to_pay_itself_gains_nothing(tmp_path: Path) -> None:
    honest = make_pr(tmp_path / "a")
    commit(honest, "fix: the work", CLAUDE, "w.py")
    commit(honest, "chore: mallory's work", HUMAN, "m.py")
    baseline = report_json(honest)

    repo = make_pr(tmp_path / "b")
    cfg = repo / ".exchange" / "config.toml"
    text = cfg.read_text()
    text = text.replace("multiplier = 2.0\nbudget = 50000", "multiplier = 1000\nbudget = 99999999")
    text = text.replace("base_rate = 150", "base_rate = 100000")
    text = text.replace('emails = ["bob@example.com"]', 'emails = ["bob@example.com", "mallory@example.org"]')
    text = text.replace("pay_fixups = false", "pay_fixups = true")
    cfg.write_text(text)
    git(repo, "commit", "-q", "--no-verify", "-am", "chore: tune config", env=HUMAN)
    commit(repo, "fix: the work", CLAUDE, "w.py")
    commit(repo, "chore: mallory's work", HUMAN, "m.py")
    commit(repo, "fixup! fix: the work", CLAUDE, "w.py", "more\n")
    # the working tree may even carry further (uncommitted) edits: never read
    cfg.write_text(text.replace("base_rate = 100000", "base_rate = 900000"))
    d = report_json(repo)
    assert d["total"] == baseline["total"] == 450
    assert {a: t["amount"] for a, t in d["agents"].items()} == {a: t["amount"] for a, t in baseline["agents"].items()}
    assert [c["amount"] for c in d["commits"]] == [0, 450, 0, 0]
    assert {u["email"] for u in d["unmatched"]} == {"mallory@example.org"}
    assert d["rules"].startswith("base ")
    rc = d["rule_changes"]
    assert rc["changed"] is True
    assert "agent claude: base rate 150 -> 100000" in rc["changes"]
    assert "agent builder: emails added mallory@example.org" in rc["changes"]
    assert "contract webapp: multiplier 2.0 -> 1000" in rc["changes"]
    assert "commit_rules.pay_fixups: False -> True" in rc["changes"]
    assert "+base_rate = 100000" in rc["diff"]
    md = tx("report", "--base", "main", "--head", "feature", "--format", "markdown", cwd=repo).out
    assert "### Rule changes in this PR" in md and "**not** applied" in md
    # --config-rev makes trusting the head an explicit choice
    trusted = report_json(repo, "--config-rev", "feature")
    assert trusted["total"] > 450 and trusted["rules"].startswith("revision ")


def test_invalid_or_deleted_head_config_is_reported_not_used(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    (repo / ".exchange" / "config.toml").write_text("this is = = not toml")
    git(repo, "commit", "-q", "--no-verify", "-am", "fix: break config", env=CLAUDE)
    d = report_json(repo)
    assert d["total"] == 450 and "invalid TOML" in d["rule_changes"]["head_error"]
    git(repo, "rm", "-q", ".exchange/config.toml")
    git(repo, "commit", "-q", "--no-verify", "-m", "chore: drop config", env=CLAUDE)
    d = report_json(repo)
    assert any("deleted" in c for c in d["rule_changes"]["changes"])


def test_no_config_in_base_uses_builtin_defaults(tmp_path: Path) -> None:
    repo = tmp_path / "scheme-lisp"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "initial", CLAUDE)
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, "fix: thing", CLAUDE, "x.scm")
    d = report_json(repo)
    assert d["rules"].startswith("built-in defaults")
    assert d["project"] == "scheme-lisp" and d["commits"][0]["breakdown"]["contract"] == "scheme-.*"
    assert d["total"] == Decimal("405")  # 150 x 1.8 x 1.5


def test_mailmap_is_applied(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    (repo / ".mailmap").write_text("Claude <claude@aygp-dr.ai> <old-laptop@example.com>\n")
    git(repo, "add", ".mailmap")
    git(repo, "commit", "-q", "--no-verify", "-m", "chore: mailmap", env=HUMAN)
    commit(repo, "fix: from the old laptop", {"GIT_AUTHOR_NAME": "C", "GIT_AUTHOR_EMAIL": "old-laptop@example.com"},
           "o.py")
    d = report_json(repo)
    assert d["commits"][1]["author_email"] == "claude@aygp-dr.ai" and d["commits"][1]["agents"] == ["claude"]


def test_reward_id_trailer_wins(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    rid = "R" + "ab" * 20
    commit(repo, f"fix: with trailer\n\nReward-Id: {rid}", CLAUDE, "r.py")
    d = report_json(repo)
    assert d["commits"][0]["reward_id"] == rid
    md = tx("report", "--base", "main", "--head", "feature", "--format", "markdown", "--no-ledger", cwd=repo)
    assert md.code == 0


def test_ledger_reconciles_paid_and_unpaid(tmp_path: Path) -> None:
    from token_exchange.services.exchange import Exchange

    repo = make_pr(tmp_path, budget=1000)
    first = commit(repo, "fix: paid already", CLAUDE, "p.py")
    commit(repo, "fix: not yet", CLAUDE, "q.py")
    commit(repo, "fix: and another", CLAUDE, "s.py")
    ids = {c["sha"]: c["reward_id"] for c in report_json(repo)["commits"]}
    assert report_json(repo)["ledger"] is None  # no ledger.toml yet

    ex = Exchange(repo / ".exchange")
    out = ex.commit("claude@aygp-dr.ai", "webapp", "fix: paid already", reward_id=ids[first], sha=first)
    assert out.amount == 450 * 10_000
    ex.close()
    d = report_json(repo)
    assert d["ledger"] == "ledger.toml"
    st = [(c["status"], c["amount"], c["paid"]) for c in d["commits"]]
    # budget 1000: 450 already paid under the contract, so the next gets 450 and the last the 100 left
    assert st == [("paid", 450, 450), ("unpaid", 450, 0), ("unpaid", 100, 0)]
    # "paid before" leaves out the range's own payment (it is shown as paid beside the rules' figure)
    assert d["contracts"][0]["paid_before"] == 0 and d["contracts"][0]["this_pr"] == 1000
    assert d["contracts"][0]["left"] == 0
    assert d["agents"]["claude"] == {"commits": 3, "amount": 1000, "paid": 450, "due": 550}
    md = tx("report", "--base", "main", "--head", "feature", "--format", "markdown", cwd=repo).out
    assert "| Status |" in md and "| paid |" in md and "| unpaid |" in md
    # --no-ledger: a pure recomputation
    pure = report_json(repo, "--no-ledger")
    assert [c["amount"] for c in pure["commits"]] == [450, 450, 100] and "status" not in pure["commits"][0]


def test_ledger_overpayment_is_flagged(tmp_path: Path) -> None:
    from token_exchange.services.exchange import Exchange

    repo = make_pr(tmp_path)
    sha = commit(repo, "chore: plain", CLAUDE, "p.py")  # base rules: 300
    rid = report_json(repo)["commits"][0]["reward_id"]
    ex = Exchange(repo / ".exchange")
    # a ledger paid under a locally edited config (keyword bonus in the ledger's message)
    ex.commit("claude@aygp-dr.ai", "webapp", "security hotfix", reward_id=rid, sha=sha)
    ex.close()
    d = report_json(repo)
    assert d["commits"][0]["paid"] == 600 and d["commits"][0]["overpaid"] is True
    assert d["notes"]


HOSTILE = [
    "fix: <img src=x onerror=alert(1)> <script>alert(1)</script>",
    "feat: ping @octocat and @github/security-team, see #1 and GH-2",
    "docs: [click](javascript:alert(1)) ![x](http://evil.example/x.png) http://evil.example www.evil.example",
    "chore: | broken | table | `code` ``` **bold** _em_ ~~s~~ <!-- token-exchange-report -->",
    "refactor: \u202egnp.exe\u202c bidi and \x1b[31mansi",
    "</details><details open><summary>pwn</summary>",
]


def _assert_inert(md: str) -> None:
    assert md.startswith(rep.MARKER + "\n") and md.count(rep.MARKER) == 1
    assert not re.search(r"@[A-Za-z0-9]", md), "an @-mention would ping"
    assert not re.search(r"(?<!\\)<(?!/?details>|summary>|/summary>|!-- token-exchange-report -->)", md)
    assert "\u202e" not in md and "\x1b" not in md
    assert "](" not in md.replace("\\](", "").replace("\\]\\(", "")
    assert "http://" not in md and "www.evil" not in md
    for line in md.splitlines():
        if line.startswith("| `"):
            # every row has the same number of unescaped pipes as the header
            assert len(re.findall(r"(?<!\\)\|", line)) == 7, line


def test_hostile_messages_are_escaped(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    for i, msg in enumerate(HOSTILE):
        commit(repo, msg, CLAUDE, f"h{i}.txt")
    commit(repo, "ok", {"GIT_AUTHOR_NAME": "<b>@admin</b>", "GIT_AUTHOR_EMAIL": "x@evil.example"}, "n.txt")
    r = tx("report", "--base", "main", "--head", "feature", "--format", "markdown", cwd=repo)
    assert r.code == 0, r.err
    _assert_inert(r.out)
    assert "onerror" in r.out  # shown, but inert
    j = report_json(repo)
    assert j["commits"][0]["subject"] == HOSTILE[0]


def test_huge_and_non_utf8_messages(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    big = "fix: huge\n\n" + ("A" * 99 + "\n") * 1000 + "security\n"  # ~100 KB; keyword beyond 64 KiB
    commit(repo, big, CLAUDE, "big.txt")
    raw = tmp_path / "msg.bin"
    raw.write_bytes(b"fix: caf\xe9 na\xefve \xff\xfe latin-1 bytes\n\nbody \x80\x81\n")
    (repo / "l.txt").write_text("x\n")
    git(repo, "add", "l.txt")
    git(repo, "commit", "-q", "--no-verify", "-F", str(raw), env=CLAUDE)
    # git itself re-encodes an invalid UTF-8 message as Latin-1 at commit time...
    assert "café" in git(repo, "log", "-1", "--format=%s")
    # ...so craft a commit object whose message bytes are really not UTF-8
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    head = git(repo, "rev-parse", "HEAD").strip()
    obj = (f"tree {tree}\nparent {head}\nauthor Claude <claude@aygp-dr.ai> 1767323045 +0000\n"
           f"committer Claude <claude@aygp-dr.ai> 1767323045 +0000\n\n").encode() + b"fix: bad \xff\xfe bytes\n"
    p = subprocess.run(["git", "hash-object", "-t", "commit", "-w", "--stdin"], cwd=repo, input=obj,
                       capture_output=True, check=True)
    git(repo, "update-ref", "refs/heads/feature", p.stdout.decode().strip())
    d = report_json(repo)
    assert d["commits"][0]["amount"] == 450  # the keyword after the 64 KiB cut does not count
    assert d["commits"][1]["subject"].startswith("fix: caf") and d["commits"][1]["amount"] == 450
    assert d["commits"][2]["subject"] == "fix: bad \ufffd\ufffd bytes" and d["commits"][2]["amount"] == 450
    r = tx("report", "--base", "main", "--head", "feature", "--format", "markdown", cwd=repo)
    assert r.code == 0 and len(r.out.encode()) < 20_000
    _assert_inert(r.out)
    t = tx("report", "--base", "main", "--head", "feature", cwd=repo)
    assert t.code == 0 and "bad \ufffd\ufffd bytes" in t.out


def test_long_ranges_collapse_and_truncate_under_the_limit(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    long_subject = "fix: " + "<@x|`*" * 40
    stream = []
    for i in range(400):
        stream.append("commit refs/heads/feature\ncommitter C <claude@aygp-dr.ai> 1767323045 +0000\n")
        msg = f"{long_subject} {i}\n".encode()
        stream.append(f"data {len(msg)}\n")
        stream.append(msg.decode())
        if i == 0:
            stream.append("from refs/heads/feature^0\n")
        stream.append(f"M 100644 inline f{i}.txt\ndata 2\n{i % 10}\n\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input="".join(stream).encode(), check=True)
    r = tx("report", "--base", "main", "--head", "feature", "--format", "markdown", cwd=repo)
    assert r.code == 0, r.err
    size = len(r.out.encode())
    assert size < render.MAX_MARKDOWN
    assert "<details><summary>400 commits</summary>" in r.out
    assert re.search(r"Showing \d+ of 400 commits", r.out)
    _assert_inert(r.out)
    # a tight limit still keeps the header and the totals
    res = rep.build(repo, "main", "feature", use_ledger=False)
    small = render.render_markdown(res, limit=6000)
    assert len(small.encode()) < 6000 and "**Total:" in small and "### Contract budget" in small


def test_few_commits_are_not_collapsed(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    commit(repo, "fix: one", CLAUDE, "1.py")
    md = tx("report", "--base", "main", "--head", "feature", "--format", "markdown", cwd=repo).out
    assert "<details>" not in md and "Showing" not in md


def test_empty_range(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    d = report_json(repo)
    assert d["commits"] == [] and d["total"] == 0
    md = tx("report", "--base", "main", "--head", "feature", "--format", "markdown", cwd=repo).out
    assert "No commits in this range." in md


def test_errors_are_one_line(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    r = tx("report", "--base", "nope", "--head", "feature", cwd=repo)
    assert r.code == 1 and "--base 'nope' is not a commit" in r.err and len(r.err.strip().splitlines()) == 1
    r = tx("report", "--base", "--upload-pack=x", "--head", "feature", cwd=repo)
    assert r.code in (1, 2)
    r = tx("report", "--base", "main", "--head", "feature", "--format", "html", cwd=repo)
    assert r.code == 2
    orphan = git(repo, "commit-tree", "-m", "orphan", git(repo, "rev-parse", "HEAD^{tree}").strip()).strip()
    r = tx("report", "--base", "main", "--head", orphan, cwd=repo)
    assert r.code == 1 and "no merge base" in r.err
    r = tx("report", "--base", "main", "--head", "feature", "--json", "--config-rev", "nope", cwd=repo)
    assert r.code == 1 and json.loads(r.out)["error"]


def test_output_file(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    commit(repo, "fix: one", CLAUDE, "1.py")
    out = tmp_path / "r.md"
    r = tx("report", "--base", "main", "--head", "feature", "--format", "markdown", "--output", str(out), cwd=repo)
    assert r.code == 0 and r.out == "" and out.read_text().startswith(rep.MARKER)


@pytest.mark.parametrize("text,expect", [
    ("@octocat", "\\@\u200docto"),
    ("a|b", "a\\|b"),
    ("<b>", "\\<b\\>"),
    ("http://x", "http\\:\u200d\\/\\/x"),
    ("www.x.org", "www\\.\u200dx"),
    ("#12", "\\#\u200d12"),
    ("x" * 200, "\u2026"),
    ("a\nb\rc\x00", "a\ufffdb\ufffdc\ufffd"),
])
def test_md_escape(text: str, expect: str) -> None:
    assert expect in render.md_escape(text)


def test_fence_cannot_be_closed_by_content() -> None:
    fenced = render._fence("+x = 1\n+```\n+````` evil\n")
    first = fenced.splitlines()[0]
    assert first.startswith("``````") and fenced.rstrip().endswith("``````")


def test_one_git_log_and_batched_patch_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No per-commit subprocesses: the number of git processes does not grow with the commits."""
    repo = make_pr(tmp_path)
    calls: list[list[str]] = []
    real_popen = subprocess.Popen  # subprocess.run goes through Popen too

    class CountingPopen(real_popen):  # type: ignore[misc,valid-type]
        def __init__(self, cmd, *a, **k):
            calls.append(list(cmd))
            super().__init__(cmd, *a, **k)

    counts = []
    for n in (2, 12):
        for i in range(n):
            commit(repo, f"fix: change {n}-{i}", CLAUDE, f"c{n}-{i}.py")
        calls.clear()
        monkeypatch.setattr(subprocess, "Popen", CountingPopen)
        r = rep.build(repo, "main", "feature", use_ledger=False)
        monkeypatch.setattr(subprocess, "Popen", real_popen)
        assert all(c.reward_id and c.reward_id.startswith("patch-") for c in r.commits)
        counts.append(len(calls))
        assert sum(1 for c in calls if "log" in c) == 1
    assert counts[0] == counts[1] <= 12


def test_criss_cross_history_uses_the_merge_base_git_picks(tmp_path: Path) -> None:
    """Two merge bases: base..head (read in parallel with merge-base) is not the range; the report re-reads
    merge-base..head from the base `git merge-base` prints."""
    repo = make_pr(tmp_path)
    git(repo, "checkout", "-q", "-b", "side", "main~1")
    commit(repo, "feat: side work", CLAUDE, "s.txt")
    git(repo, "checkout", "-q", "feature")
    commit(repo, "feat: feature work", CLAUDE, "f.txt")
    # criss-cross: feature merges side, and side merges feature's previous tip
    tip = git(repo, "rev-parse", "feature").strip()
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge side into feature", "side", env=CLAUDE)
    git(repo, "checkout", "-q", "side")
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge feature into side", tip, env=CLAUDE)
    git(repo, "checkout", "-q", "feature")
    commit(repo, "fix: after the criss-cross", CLAUDE, "g.txt")
    bases = git(repo, "merge-base", "--all", "side", "feature").split()
    assert len(bases) == 2
    mb = git(repo, "merge-base", "side", "feature").strip()
    r = tx("report", "--base", "side", "--head", "feature", "--json", cwd=repo)
    assert r.code == 0, r.err
    d = json.loads(r.out, parse_float=Decimal)
    assert d["merge_base"] == mb
    expected = git(repo, "rev-list", "--topo-order", "--reverse", f"{mb}..feature").split()
    assert [c["sha"] for c in d["commits"]] == expected
    assert expected != git(repo, "rev-list", "--topo-order", "--reverse", "side..feature").split()


def test_config_texts_read_in_one_batch(tmp_path: Path) -> None:
    """Both revisions' configs come from one `git cat-file --batch`; a directory or a missing path is no config."""
    repo = make_pr(tmp_path)
    commit(repo, "docs: a directory where a config path could point", CLAUDE, "conf/x.toml")
    base, head = (git(repo, "rev-parse", r).strip() for r in ("main", "feature"))
    texts = revision.config_texts_at(repo, [base, head, head], ".exchange/config.toml")
    assert texts[0] == texts[1] == texts[2] == (repo / ".exchange" / "config.toml").read_text()
    assert revision.config_texts_at(repo, [base, head], "conf") == [None, None]  # a tree: not a config
    assert revision.config_texts_at(repo, [head, base], "conf/x.toml") == [
        "docs: a directory where a config path could point\n", None]
    with pytest.raises(UserError):
        revision.config_texts_at(repo, [head], "a\nb")
    r = tx("report", "--base", "main", "--head", "feature", "--config-path", "conf", "--json", cwd=repo)
    assert r.code == 0 and "built-in defaults" in json.loads(r.out)["rules"]


def test_text_format_shows_hostile_subjects_inert_one_line_each(tmp_path: Path) -> None:
    """Terminal output: control, bidi and line-separator characters in subjects and emails are replaced,
    each commit is exactly two lines, and long subjects are cut."""
    repo = make_pr(tmp_path)
    nasty = "fix: evil \x1b[31mred\x1b[0m \u202egnp.exe\u2028more\tTab" + "x" * 100
    commit(repo, nasty, CLAUDE, "n.txt")
    commit(repo, "ok", {"GIT_AUTHOR_NAME": "E", "GIT_AUTHOR_EMAIL": "e\u202e@evil.example"}, "e.txt")
    r = tx("report", "--base", "main", "--head", "feature", cwd=repo)
    assert r.code == 0, r.err
    for bad in ("\x1b", "\u202e", "\u2028", "\t"):
        assert bad not in r.out
    rows = r.out.split("\n\n")[2].splitlines()  # the commit block: two lines per commit
    assert len(rows) == 4 and "fix: evil \ufffd[31mred" in rows[0] and rows[0].endswith("\u2026")
    assert "e\ufffd@evil.example" in rows[3]


def test_pr_that_merged_its_base_reads_the_range_once_more_correctly(tmp_path: Path) -> None:
    """An 'update branch' merge gives base..head two boundary commits but one merge base (the merged tip)."""
    repo = make_pr(tmp_path)
    commit(repo, "feat: before the update", CLAUDE, "d.txt")
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge main into feature", "main", env=CLAUDE)
    commit(repo, "fix: after the update", CLAUDE, "e.txt")
    boundary = [ln for ln in git(repo, "log", "--boundary", "--format=%m %H", "main..feature").splitlines()
                if ln.startswith("-")]
    assert len(boundary) == 2
    d = report_json(repo)
    mb = git(repo, "merge-base", "main", "feature").strip()
    assert d["merge_base"] == mb == git(repo, "rev-parse", "main").strip()
    assert [c["sha"] for c in d["commits"]] == git(repo, "rev-list", "--topo-order", "--reverse",
                                                    f"{mb}..feature").split()
    assert [c["amount"] for c in d["commits"]] == [Decimal(300), 0, Decimal(450)]  # the merge earns nothing


def test_head_behind_base_is_an_empty_range(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    git(repo, "checkout", "-q", "main")
    git(repo, "branch", "-q", "old", "main~1")
    r = tx("report", "--base", "main", "--head", "old", "--json", cwd=repo)
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d["commits"] == [] and d["merge_base"] == git(repo, "rev-parse", "old").strip()


@pytest.mark.parametrize("spelling", [["--repo", "webapp"], ["--repo=./webapp"], ["--repo", "webapp", "--base=main"]])
def test_repo_and_revision_spellings_give_the_same_report(tmp_path: Path, spelling: list[str]) -> None:
    """tx report starts git log from a quick look at argv before argparse runs; whatever the spelling,
    argparse's reading is the one used (a differing guess is stopped and the log started again)."""
    repo = make_pr(tmp_path)
    commit(repo, "fix: one", CLAUDE, "1.py")
    inside = tx("report", "--base", "main", "--head", "feature", "--json", cwd=repo)
    outside = tx("report", "--base", "main", "--head", "feature", "--json", *spelling, cwd=tmp_path)
    assert inside.code == outside.code == 0, outside.err
    assert json.loads(inside.out) == json.loads(outside.out)


def test_log_records_cannot_be_forged_and_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    """Messages holding NULs' neighbours, our record separator's first byte and invalid UTF-8 still give
    exactly one commit each, with the message intact (or replacement characters)."""
    repo = make_pr(tmp_path)
    for i, msg in enumerate(["fix: é ünïcode ✓", "feat: two\n\nbody \x01tx fake record", "docs: x \x01"]):
        commit(repo, msg, CLAUDE, f"u{i}.txt")
    raw = subprocess.run(["git", "commit-tree", "HEAD^{tree}", "-p", "HEAD"], cwd=repo, capture_output=True,
                         check=True, input=b"fix: bad \xff\xfe bytes\n").stdout.decode().strip()
    git(repo, "update-ref", "refs/heads/feature", raw)
    commits = history.read_range(repo, "main", "feature").commits
    assert [c.message.split("\n")[0] for c in commits][:3] == ["fix: é ünïcode ✓", "feat: two", "docs: x \x01"]
    assert len(commits) == 4 and commits[3].message.startswith("fix: bad ")  # git re-encodes it, never a crash
    assert "fake record" in commits[1].message


def test_merges_inside_the_pr_are_listed_in_git_topo_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The log streams newest first by date; with merges (interleaved dates here) the report still lists
    commits oldest first in exactly git's --topo-order."""
    repo = make_pr(tmp_path)

    def at(minute: int) -> dict[str, str]:
        when = f"2026-01-02T04:{minute:02d}:00+00:00"
        return {**CLAUDE, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}

    commit(repo, "feat: a", at(1), "a1.txt")
    git(repo, "checkout", "-q", "-b", "side")
    commit(repo, "feat: s1", at(2), "s1.txt")
    git(repo, "checkout", "-q", "feature")
    commit(repo, "fix: f1", at(3), "f1.txt")
    git(repo, "checkout", "-q", "side")
    commit(repo, "docs: s2", at(4), "s2.txt")
    git(repo, "checkout", "-q", "feature")
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge side", "side", env=at(5))
    commit(repo, "fix: f2", at(6), "f2.txt")
    topo = git(repo, "rev-list", "--topo-order", "--reverse", "main..feature").split()
    assert topo != git(repo, "rev-list", "--reverse", "main..feature").split()  # date order differs
    d = report_json(repo)
    assert [c["sha"] for c in d["commits"]] == topo
