"""Who is an agent: author emails -> agent names, by the documented precedence.

1. an address listed in an agent's ``emails`` (git has already applied .mailmap
   when the email comes from ``%aE``/``%cE``);
2. otherwise an address whose local part (before ``@``, ignoring ``+tag``) is an
   agent's name: ``claude@aygp-dr.ai`` -> ``claude``;
3. otherwise a bare agent name (``claude``) is that agent.
"""

from __future__ import annotations

import re

from token_exchange.rules.config import Config

CO_AUTHOR = re.compile(r"^Co-authored-by:\s*(.*?)\s*<([^<>\s]+)>\s*$", re.IGNORECASE | re.MULTILINE)


def agent_for(cfg: Config, email: str) -> str | None:
    address = email.strip().strip("<>").lower()
    if not address or len(address) > 320:
        return None
    for agent in cfg.agents.values():
        if address in agent.emails:
            return agent.name
    local = address.split("@", 1)[0].split("+", 1)[0]
    if local in cfg.agents:
        return local
    return None


def co_author_emails(message: str) -> list[str]:
    """Emails named in ``Co-authored-by:`` trailers, in order, without duplicates."""
    seen: list[str] = []
    for _name, email in CO_AUTHOR.findall(message):
        if email.lower() not in seen:
            seen.append(email.lower())
    return seen
