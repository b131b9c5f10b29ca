"""`identities.agent_for`: one dict probe per lookup (built once per config), the documented precedence.

`Exchange.commit` resolves every author through it; a 1,000-agent simulation used to scan every agent's
emails on each commit.  The answers must be exactly those of that scan (kept here as the reference).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from token_exchange.rules import config as config_mod
from token_exchange.rules.config import Config
from token_exchange.rules.identities import agent_for

TEXT = """
[agents.claude]
base_rate = 150
primary_llm = "claude-opus"
emails = ["c.ai@example.com", "Boss@Example.COM"]

[agents.builder]
base_rate = 120
primary_llm = "qwen2.5-coder"
emails = ["claude@corp.example"]

[agents.zero]
base_rate = 90
primary_llm = "llama3.2"
emails = []

[models]
claude-opus = { cost_per_1k = 15 }
"qwen2.5-coder" = { cost_per_1k = 0.1 }
"llama3.2" = { cost_per_1k = 0.1 }
"""


def reference(cfg: Config, email: str) -> str | None:
    """The scan agent_for replaced (listed emails first, then the local part, then a bare name)."""
    address = email.strip().strip("<>").lower()
    if not address or len(address) > 320:
        return None
    for agent in cfg.agents.values():
        if address in agent.emails:
            return agent.name
    local = address.split("@", 1)[0].split("+", 1)[0]
    return local if local in cfg.agents else None


CFG = config_mod.parse(TEXT, None)
ADDRESSES = ["c.ai@example.com", "boss@example.com", "claude@corp.example", "claude@aygp-dr.ai", "zero",
             "zero+bot@x.org", "builder@x", "nobody@example.com", "", "x" * 400 + "@a.b", "@example.com"]


def test_precedence() -> None:
    assert agent_for(CFG, "claude@corp.example") == "builder"  # a listed address beats the local part
    assert agent_for(CFG, " <BOSS@example.com> ") == "claude"  # listed, any case, brackets and spaces
    assert agent_for(CFG, "claude@aygp-dr.ai") == "claude"  # local part
    assert agent_for(CFG, "zero+ci@example.org") == "zero"  # +tag ignored
    assert agent_for(CFG, "builder") == "builder"  # a bare name
    assert agent_for(CFG, "nobody@example.com") is None
    assert agent_for(CFG, "") is None and agent_for(CFG, "a" * 321) is None


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ADDRESSES), st.sampled_from(["", " ", "<"]), st.booleans(), st.text(max_size=6))
def test_same_answers_as_the_scan(address: str, pad: str, upper: bool, noise: str) -> None:
    for email in (pad + (address.upper() if upper else address) + pad.replace("<", ">"), noise + address, noise):
        assert agent_for(CFG, email) == reference(CFG, email), email


def test_each_config_gets_its_own_table() -> None:
    """The table is built per config: another config (or an edited copy) never sees a stale one."""
    other = config_mod.parse(TEXT.replace('emails = ["claude@corp.example"]', 'emails = ["ops@corp.example"]'),
                             None)
    for _ in range(2):  # alternate, so each lookup finds the other's table cached first
        assert agent_for(CFG, "claude@corp.example") == "builder"
        assert agent_for(other, "claude@corp.example") == "claude"
        assert agent_for(other, "ops@corp.example") == "builder"
        assert agent_for(CFG, "ops@corp.example") is None
    replaced = CFG._replace(agents={n: a._replace(emails=()) for n, a in CFG.agents.items()})
    assert agent_for(replaced, "c.ai@example.com") is None and agent_for(CFG, "c.ai@example.com") == "claude"
