"""Who is an agent: author emails -> agent names, by the documented precedence.

1. an address listed in an agent's ``emails`` (git has already applied .mailmap
   when the email comes from ``%aE``/``%cE``);
2. otherwise an address whose local part (before ``@``, ignoring ``+tag``) is an
   agent's name: ``claude@aygp-dr.ai`` -> ``claude``;
3. otherwise a bare agent name (``claude``) is that agent.
"""

from __future__ import annotations

from token_exchange.rules.config import Agent, Config

CO_AUTHOR_KEY = "co-authored-by:"
CACHED_CONFIGS = 8

# (agents dict, listed email -> agent, address as given -> agent_for's answer), newest first.  Keyed by the
# identity of the config's ``agents`` dict: a parsed Config is never changed in place (``_replace`` makes a new
# one), and holding the dict keeps its id from being reused.  Built once per config, so a lookup is one dict
# probe however many agents there are (a 1,000-agent simulation pays each commit).
_email_tables: list[tuple[dict[str, Agent], dict[str, str], dict[str, str | None]]] = []
RESOLVED_MAX = 4096  # addresses remembered per config (agent_for's answers; cleared when full)


def _tables(cfg: Config) -> tuple[dict[str, str], dict[str, str | None]]:
    """(listed email -> agent, address as given -> agent_for's answer) of ``cfg``'s agents."""
    agents = cfg.agents
    for held, table, resolved in _email_tables:
        if held is agents:
            return table, resolved
    table = {}
    for agent in agents.values():
        for e in agent.emails:
            table.setdefault(e, agent.name)  # the first agent listing an address keeps it (config order)
    _email_tables.insert(0, (agents, table, {}))
    del _email_tables[CACHED_CONFIGS:]
    return table, _email_tables[0][2]


def agent_for(cfg: Config, email: str) -> str | None:
    table, resolved = _tables(cfg)
    if email in resolved:  # answered before for this config (the same pure answer)
        return resolved[email]
    address = email.strip().strip("<>").lower()
    if not address or len(address) > 320:
        name = None
    else:
        name = table.get(address)
        if name is None:
            local = address.split("@", 1)[0].split("+", 1)[0]
            name = local if local in cfg.agents else None
    if len(resolved) >= RESOLVED_MAX:
        resolved.clear()
    if type(email) is str:
        resolved[email] = name
    return name


def co_author_emails(message: str) -> list[str]:
    """Emails named in ``Co-authored-by: Name <email>`` lines, in order, without duplicates.

    Parsed line by line with string operations (no regex): linear in the message, whatever it holds.
    """
    if "-b" not in message and "-B" not in message:  # no "Co-authored-by" at all (the usual message)
        return []
    seen: list[str] = []
    for line in message.splitlines():
        text = line.strip()
        if not text[:len(CO_AUTHOR_KEY)].lower() == CO_AUTHOR_KEY or not text.endswith(">"):
            continue
        start = text.rfind("<")
        email = text[start + 1:-1].lower()
        if start < 0 or not email or any(c.isspace() or c in "<>" for c in email):
            continue
        if email not in seen:
            seen.append(email)
    return seen
