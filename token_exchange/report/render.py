"""Rendering a report: markdown (a PR comment), text, JSON.  Untrusted text (subjects, names, emails,
config) is made inert; output is deterministic (no clock, no dates)."""

from __future__ import annotations

import re
from typing import Any

from token_exchange.amounts import fmt, to_decimal
from token_exchange.errors import clean_text
from token_exchange.report.build import HINT, MARKER, CommitLine, Report
from token_exchange.report.rule_diff import MAX_DIFF

MAX_MARKDOWN = 60_000  # bytes; GitHub comments allow 65,536 characters
COLLAPSE_OVER = 15  # commit tables longer than this go in <details>
MAX_SUBJECT = 100
MAX_NAME = 60
MAX_UNMATCHED_SHOWN = 50


# --- JSON ----------------------------------------------------------------------------
def to_json(r: Report) -> dict[str, Any]:
    return {
        "base": r.base, "head": r.head, "merge_base": r.merge_base, "project": r.project,
        "rules": r.config_source, "ledger": r.ledger, "total": to_decimal(r.total),
        "paid": to_decimal(r.paid_total) if r.ledger else None,
        "agents": {a: {"commits": t.commits, "amount": to_decimal(t.amount), "paid": to_decimal(t.paid),
                       "due": to_decimal(t.due)} for a, t in r.agents.items()},
        "contracts": [{"name": c.name, "multiplier": c.multiplier, "budget": to_decimal(c.budget),
                       "paid_before": to_decimal(c.paid_before), "this_pr": to_decimal(c.this_pr),
                       "left": to_decimal(c.left)} for c in r.contracts],
        "unmatched": [{"email": e, "commits": n, "hint": HINT} for e, n in sorted(r.unmatched.items())],
        "commits": [_commit_json(c) for c in r.commits],
        "rule_changes": r.rules,
        "notes": r.notes,
    }


def _commit_json(c: CommitLine) -> dict[str, Any]:
    d: dict[str, Any] = {"sha": c.sha, "parents": c.parents, "author_email": c.email, "author_name": c.name,
                         "subject": c.subject[:500], "agents": c.agents, "amount": to_decimal(c.amount),
                         "shares": {a: to_decimal(v) for a, v in c.shares.items()}, "reward_id": c.reward_id}
    if c.plan.status == "unmatched":
        d["unmatched"] = True
        d["reason"] = "author maps to no agent"
    elif c.reward is None:
        d["reason"] = "already paid before this range"
        d["already_paid"] = [{"agent": p.agent, "amount": to_decimal(p.amount), "sha": p.sha}
                             for p in c.plan.already]
    else:
        d["reason"] = c.reward.reason
        d["breakdown"] = c.reward.breakdown()
        d["excluded"] = c.reward.excluded
    if c.status is not None:
        d["status"] = c.status
        d["paid"] = to_decimal(c.paid)
        d["flag"] = c.flag
        if c.overpaid:
            d["overpaid"] = True
    return d


# --- escaping untrusted text -----------------------------------------------------------
_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_BAD = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
ZWJ = "\u200d"


def md_escape(text: str, limit: int = MAX_SUBJECT) -> str:
    """Untrusted text as inert inline markdown: every ASCII punctuation backslash-escaped (no
    links, emphasis, HTML, tables or code), no control or bidi characters, and a zero-width
    joiner after ``@``, ``#`` and inside ``://`` / ``www.`` so nothing pings, links or autolinks."""
    text = clean_text(text, limit=100_000)
    text = _BAD.sub("\ufffd", text)
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    out: list[str] = []
    low = text.lower()
    for i, ch in enumerate(text):
        if ch in _PUNCT:
            out.append("\\" + ch)
            if ch in "@#":
                out.append(ZWJ)
            elif ch == ":" and low.startswith("//", i + 1):
                out.append(ZWJ)
            elif ch == "." and low.endswith("www", 0, i):
                out.append(ZWJ)
        else:
            out.append(ch)
    return "".join(out)


def _fence(text: str) -> str:
    """A fenced code block that the text cannot close."""
    longest = max((len(m) for m in re.findall(r"`+|~+", text)), default=0)
    f = "`" * max(3, longest + 1)
    body = _BAD.sub(lambda m: m.group(0) if m.group(0) == "\n" else "\ufffd", text)
    return f"{f}diff\n{body.rstrip()}\n{f}"


def _code(text: str) -> str:
    """Trusted short text (shas, amounts, our own words) as a code span."""
    return f"`{text}`"


# --- markdown --------------------------------------------------------------------------
def _why(c: CommitLine) -> str:
    if c.plan.status == "unmatched":
        return "author is not an agent"
    if c.reward is None:
        return "already paid before this range"
    r = c.reward
    if r.excluded:
        return f"{r.excluded}: earns nothing"
    parts = [f"{r.base_rate} base", f"x{r.multiplier} {md_escape(r.contract, 40)}",
             f"x{r.bonus} {md_escape(r.keyword, 40) if r.keyword else '(no keyword)'}"]
    why = " ".join(parts)
    if r.capped and c.status != "paid":
        why += (", budget exhausted" if r.amount == 0 else f", capped from {fmt(r.gross)} by the budget")
    if len(c.agents) > 1:
        why += f", split {len(c.agents)} ways"
    return why


def _commit_row(c: CommitLine, with_status: bool) -> str:
    who = ", ".join(c.agents) if c.agents else "**unmatched**"
    cells = [_code(c.sha[:10]), md_escape(c.subject, MAX_SUBJECT) or "\\(no message\\)",
             md_escape(c.email, MAX_NAME), who, fmt(c.amount), _why(c)]
    if with_status:
        cells.append(fmt(c.paid))
        cells.append((c.status or "") + (f" \\! {c.flag}" if c.flag else ""))
    return "| " + " | ".join(cells) + " |"


def render_markdown(r: Report, limit: int = MAX_MARKDOWN) -> str:
    with_status = r.ledger is not None
    head: list[str] = [MARKER, "## Token earnings for this pull request", ""]
    n = len(r.commits)
    head.append(f"{n} commit{'s' if n != 1 else ''} in {_code(r.merge_base[:10] + '..' + r.head[:10])} "
                f"(base {_code(r.base[:10])}), project {_code(md_code_safe(r.project))}. "
                f"Rules from {md_escape(r.config_source, 200)}; this pull request's own rule changes do not apply.")
    if r.ledger:
        head.append(f"Ledger: {md_escape(r.ledger, 100)}. Tokens = what the base rules pay; Paid = what the "
                    f"ledger paid for these commits ({fmt(r.paid_total)} in all); differences are marked \\!.")
    head.append("")
    earners = sum(1 for t in r.agents.values() if t.amount)
    head.append(f"**Total: {fmt(r.total)} tokens** to {earners} agent{'s' if earners != 1 else ''}.")
    excluded = sum(1 for c in r.commits if c.excluded)
    unmatched = sum(r.unmatched.values())
    facts = [f for f in (f"{excluded} excluded" if excluded else "",
                         f"{unmatched} by unmatched authors" if unmatched else "") if f]
    if facts:
        head[-1] += " " + ", ".join(facts).capitalize() + "."
    for note in r.notes:
        head.append(f"> {md_escape(note, 300)}")
    head.append("")

    sections: list[str] = []
    if r.agents:
        rows = ["### Per agent", ""]
        if with_status:
            rows += ["| Agent | Commits | Earns | Paid | Due |", "|---|--:|--:|--:|--:|"]
            rows += [f"| {a} | {t.commits} | {fmt(t.amount)} | {fmt(t.paid)} | {fmt(t.due)} |"
                     for a, t in r.agents.items()]
        else:
            rows += ["| Agent | Commits | Earns |", "|---|--:|--:|"]
            rows += [f"| {a} | {t.commits} | {fmt(t.amount)} |" for a, t in r.agents.items()]
        sections.append("\n".join(rows) + "\n")
    rows = ["### Contract budget", "", "| Contract | Multiplier | Budget | Paid before | This PR | Left |",
            "|---|--:|--:|--:|--:|--:|"]
    rows += [f"| {md_escape(c.name, 60)} | x{c.multiplier} | {fmt(c.budget)} | {fmt(c.paid_before)} | "
             f"{fmt(c.this_pr)} | {fmt(c.left)} |" for c in r.contracts]
    sections.append("\n".join(rows) + "\n")
    if r.unmatched:
        rows = ["### Unmatched authors", "",
                "Their commits earn nothing"
                f"{' (this config rejects them in hooks)' if r.unknown_author == 'error' else ''}. "
                f"To pay one, {md_escape(HINT, 200)}.", ""]
        items = sorted(r.unmatched.items())
        for email, cnt in items[:MAX_UNMATCHED_SHOWN]:
            rows.append(f"- {md_escape(email, MAX_NAME)} ({cnt} commit{'s' if cnt != 1 else ''})")
        if len(items) > MAX_UNMATCHED_SHOWN:
            rows.append(f"- \u2026 and {len(items) - MAX_UNMATCHED_SHOWN} more")
        sections.append("\n".join(rows) + "\n")
    rc = r.rules
    if rc["changed"]:
        rows = ["### Rule changes in this PR", "",
                "This pull request edits the reward rules. They are **not** applied to this report "
                "(rules always come from the base branch); they take effect for later work once merged. "
                "Review them like code.", ""]
        for ch in rc["changes"][:60]:
            rows.append(f"- {md_escape(ch, 300)}")
        if len(rc["changes"]) > 60:
            rows.append(f"- \u2026 and {len(rc['changes']) - 60} more")
        if rc["head_error"]:
            rows.append(f"- the head config is invalid: {md_escape(rc['head_error'], 300)}")
        rows += ["", "<details><summary>Config diff</summary>", "", _fence(rc["diff"]), ""]
        if rc["diff_truncated"]:
            rows.append(f"(diff truncated to {MAX_DIFF} characters)")
            rows.append("")
        rows.append("</details>")
        sections.append("\n".join(rows) + "\n")

    header = ["| Commit | Subject | Author | Agent | Tokens | Why |" + (" Paid | Status |" if with_status else ""),
              "|---|---|---|---|--:|---|" + ("--:|---|" if with_status else "")]
    fixed = "\n".join(head) + "\n" + "\n".join(sections)
    collapse = n > COLLAPSE_OVER
    open_ = ["### Commits", ""]
    if collapse:
        open_ += [f"<details><summary>{n} commits</summary>", ""]
    close = ["", "</details>"] if collapse else []
    room = limit - len(fixed.encode()) - len("\n".join(open_ + header + close).encode()) - 400
    body: list[str] = []
    used = 0
    for c in r.commits:
        row = _commit_row(c, with_status)
        size = len(row.encode()) + 1
        if used + size > room:
            break
        body.append(row)
        used += size
    shown = len(body)
    table = open_ + (header + body if r.commits else ["No commits in this range."]) + close
    if shown < n:
        table += ["", f"Showing {shown} of {n} commits (comment size limit); run "
                      f"`tx report --format json` or see the job artifact for all of them."]
    text = "\n".join(head) + "\n" + "\n".join(table) + "\n\n" + "\n".join(sections)
    return text.rstrip("\n") + "\n"


def md_code_safe(text: str) -> str:
    """Text for inside a single-backtick code span: no backticks, pipes or control characters."""
    text = _BAD.sub("\ufffd", clean_text(text, limit=200))
    return text.replace("`", "'").replace("|", "/") or "?"


# --- text ------------------------------------------------------------------------------
def _plain(text: str, limit: int) -> str:
    text = clean_text(text, limit=100_000)
    if not text.isprintable():  # every _BAD character is unprintable: printable text has none (fast path)
        text = _BAD.sub("\ufffd", text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def render_text(r: Report) -> str:
    out = [f"token-exchange report {r.merge_base[:10]}..{r.head[:10]} (base {r.base[:10]}), "
           f"project {_plain(r.project, 80)}",
           f"rules: {_plain(r.config_source, 200)}" + (f"; ledger: {r.ledger}" if r.ledger else ""),
           f"total: {fmt(r.total)} tokens" + (f" (the ledger paid {fmt(r.paid_total)})" if r.ledger else ""), ""]
    for a, t in r.agents.items():
        extra = f"  paid {fmt(t.paid)}  due {fmt(t.due)}" if r.ledger else ""
        out.append(f"  {a:<16} {t.commits:>6} commits  {fmt(t.amount):>12}{extra}")
    for use in r.contracts:
        out.append(f"contract {_plain(use.name, 60)} x{use.multiplier}: budget {fmt(use.budget)}, paid before "
                   f"{fmt(use.paid_before)}, this PR {fmt(use.this_pr)}, left {fmt(use.left)}")
    out.append("")
    for c in r.commits:
        who = ",".join(c.agents) or "unmatched"
        status = f" [{c.status}{' paid ' + fmt(c.paid) if c.paid else ''}]" if c.status else ""
        flag = f" ! {c.flag}" if c.flag else ""
        out.append(f"{c.sha[:10]} {fmt(c.amount):>10} {who:<12} {_plain(c.subject, 60)}{status}{flag}")
        if c.plan.status == "unmatched":
            why = "author is not an agent"
        elif c.reward is None:
            why = "already paid before this range"
        else:
            why = _plain(c.reward.reason, 200)
        out.append(f"{'':>11}{_plain(c.email, 80)}: {why}")
    if r.unmatched:
        out.append("")
        out.append("unmatched authors (" + HINT + "):")
        out += [f"  {_plain(e, 80)} ({n})" for e, n in sorted(r.unmatched.items())[:MAX_UNMATCHED_SHOWN]]
    if r.rules["changed"]:
        out.append("")
        out.append("rule changes in this PR (not applied):")
        out += [f"  - {_plain(ch, 300)}" for ch in r.rules["changes"]]
        if r.rules["head_error"]:
            out.append(f"  - head config invalid: {_plain(r.rules['head_error'], 300)}")
    for note in r.notes:
        out.append(f"note: {note}")
    return "\n".join(out) + "\n"
