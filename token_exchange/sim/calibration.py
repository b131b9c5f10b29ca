"""The seed's figures the activity model is calibrated to, and the medians of runs to compare with them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from token_exchange.sim.activity import BANDS
from token_exchange.sim.result import SimResult

# The calibration's targets.  Seed, "Final Balances" (a 24-hour run): agent -> (earned, spent, final) in tokens;
# its Final = Start + Earned - Spent, so "spent" is everything that left the wallet (LLM spend and pool stakes).
SEED_TABLE: dict[str, tuple[int, int, int]] = {
    "claude": (3255, 3935, 9320), "builder": (5538, 977, 14561), "observer": (4260, 284, 13976),
    "lambda": (4103, 105, 13998), "spark": (1978, 1419, 10559), "zero": (1539, 75, 11464)}
# Seed, "Time-of-Day Effects": hours 0-4 saw 46 commits and 24 requests.
SEED_BANDS: dict[str, tuple[int, int]] = {"0-4": (46, 24)}
FINDINGS = ("only_claude_negative", "zero_spends_least", "no_reserve_breach", "claude_hits_burst",
            "claude_hits_hourly")


def _median(values: Sequence[int]) -> int:
    """The median of whole numbers, as a whole number (the lower unit when it falls between two)."""
    s = sorted(values)
    n = len(s)
    return (s[(n - 1) // 2] + s[n // 2]) // 2


def calibration(runs: Sequence[SimResult]) -> dict[str, Any]:
    """Runs of the seed's setting (24 h, six agents) against the seed's figures: each agent's median earned,
    spent (LLM spend plus net pool stakes, as the seed's Final = Start + Earned - Spent) and final balance,
    in units; how many runs show each of the seed's findings; the median commits and requests per band."""
    agents: dict[str, dict[str, int]] = {}
    for a in SEED_TABLE:
        rows = [r.balances[a] for r in runs if a in r.balances]
        if rows:
            agents[a] = {"earned": _median([b["earned"] for b in rows]),
                         "spent": _median([b["spent"] + b["pooled"] for b in rows]),
                         "final": _median([b["final"] for b in rows])}
    tally = {k: 0 for k in FINDINGS}
    bands: dict[str, list[list[int]]] = {label: [[], []] for label, _, _ in BANDS}
    for r in runs:
        f = r.findings()
        for k in FINDINGS:
            tally[k] += bool(f[k])
        for b in r.bands():
            bands[b["hours"]][0].append(b["commits"])
            bands[b["hours"]][1].append(b["requests"])
    return {"runs": len(runs), "agents": agents, "findings": tally,
            "bands": {k: {"commits": _median(c), "requests": _median(q)} for k, (c, q) in bands.items()}}
