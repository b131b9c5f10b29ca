"""Creating a home and editing its config (tomlkit: the user's comments and layout survive)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from token_exchange.errors import UserError
from token_exchange.rules.config import AGENT_NAME, default_text, edit_config, parse
from token_exchange.services.exchange import HOME_GITIGNORE, Exchange
from token_exchange.services.home import find_home
from token_exchange.storage import atomic_write


def init_home(option: str | Path | None, backend: str) -> dict[str, Any]:
    """Create HOME/config.toml (seed defaults, commented) and HOME/.gitignore; open every wallet."""
    import tomlkit

    from token_exchange.ledger.backends import NAMES, open_journal
    from token_exchange.rules.config import load

    if backend not in NAMES:
        raise UserError(f"--backend must be {' or '.join(NAMES)}, not {backend[:20]!r}")
    home = find_home(option)
    cfg_path = home / "config.toml"
    created = not cfg_path.exists()
    text = ""
    if created:
        doc = tomlkit.parse(default_text())
        doc["exchange"]["backend"] = backend
        text = tomlkit.dumps(doc)
        cfg = parse(text, cfg_path)
    else:
        cfg = load(cfg_path)
    # The backend prepares what it needs outside the home (and refuses, e.g. notes outside git) before any write.
    open_journal(cfg.backend, home, cfg).setup()
    home.mkdir(parents=True, exist_ok=True)
    if created:
        atomic_write(cfg_path, text.encode("utf-8"))
    ignore = home / ".gitignore"
    if not ignore.exists():
        atomic_write(ignore, HOME_GITIGNORE.encode())
    ex = Exchange(home)
    try:
        ex.open_all()
    finally:
        ex.close()
    verb = "created" if created else "already set up; config kept"
    return {"home": str(home), "created": created, "backend": ex.cfg.backend,
            "agents": sorted(ex.cfg.agents), "message": f"exchange {verb} at {home} ({ex.cfg.backend} backend)"}


def add_agent(ex: Exchange, name: str, base_rate: str, primary_llm: str, level: int, emails: list[str]) -> None:
    import tomlkit

    from token_exchange.amounts import to_decimal, to_units

    if not AGENT_NAME.fullmatch(name):
        raise UserError(f"invalid agent name {name[:40]!r}: 1-64 of a-z 0-9 _ . - starting with a letter or digit")
    if name in ex.cfg.agents:
        raise UserError(f"agent {name} already exists")
    rate = to_decimal(to_units(base_rate, what="--base-rate"))
    ex.cfg.model(primary_llm)

    def edit(doc: Any) -> None:
        table = tomlkit.table()
        table["level"] = level
        # The decimal text goes straight into the TOML (no Python float on the way); read back as Decimal.
        table["base_rate"] = tomlkit.parse(f"v = {format(rate, 'f')}")["v"]
        table["primary_llm"] = primary_llm
        table["emails"] = [e.strip() for e in emails]
        if "agents" not in doc:
            doc["agents"] = tomlkit.table(is_super_table=True)
        doc["agents"][name] = table

    edit_config(ex.home / "config.toml", edit)
