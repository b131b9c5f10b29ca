"""``tx simulate``: the seed's 24-hour economy, driven through the real engine.

Only the *activity* is simulated: which agent commits what, when, on which
project with which keywords, and which LLM requests and pool jobs it attempts.
Every commit goes through ``Exchange.commit`` (real reward rules, contract
budgets, idempotency), every request through the real spending engine
(``services.spending``/``rules.limits``: prices, burst/hourly/daily/reserve
limits) and pool work through ``services.pools``.  Whatever those rules refuse
is recorded as a limit event; nothing here re-implements a rule.

Determinism: one ``random.Random(seed)`` draws every choice, the clock is a
simulated one starting at ``activity.EPOCH``, ids derive from the seed and a
counter, so the same seed and config give the same ledger and the same result.

The modules:

* ``activity``: the activity model (the agents' strategies, hour-of-day profiles, projects, messages);
* ``config``: a run's config (``--agents N`` appends generated agents);
* ``journal``: the throwaway home's in-memory journal (``SimJournal``) and index;
* ``spending``: the agents' spending and pool jobs, through the real engine;
* ``run``: the run loop (``Simulation``, ``simulate``);
* ``result``: what a run returns (``SimResult``: balances, limit events and their log lines, findings);
* ``calibration``: the seed's figures and the medians of runs to compare with them.
"""
