"""tx-bd: the beads (bd) adapter (being built)."""


def main() -> None:
    raise SystemExit("tx-bd: not built yet")
