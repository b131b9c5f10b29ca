"""The beads (``bd``) integration: read what bd really closed, pay it through the one engine.

No typer, no rich here (``cli/bd.py`` is the thin CLI).  Modules, lowest first (no import circles):

* ``issues``: ``Issue`` and its validation (bd's JSON and its JSONL export, each line on its own);
* ``shapes``: the shapes of bd's JSON output (envelope, errors, lists) and ``BdError``;
* ``workspace``: the beads dir bd resolves (``$BEADS_DIR``, redirects, worktrees) and its export;
* ``client``: ``BdClient`` (the real ``bd``) and ``Source`` (bd, or the export when bd is absent);
* ``payee``: who is paid -- assignee, ``--agent``, bd's actor in the binary's order;
* ``payments``: the ledger's view of issue payments and writing the plans of
  ``rules.engine.plan_issue`` (pay once per close, reverse a reopened issue's payment);
* ``hooks``: what bd hands its hooks, the scripts ``tx-bd install-hook`` writes, ``pre_write``.
"""
