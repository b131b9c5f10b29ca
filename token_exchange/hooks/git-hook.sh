#!/bin/sh
# token-exchange @HOOK@ hook: @PURPOSE@
# Installed by `tx hooks install`; `tx hooks uninstall` removes it and restores a hook it chained.
# It never blocks or breaks a commit: any problem is one line, and what it could not pay is caught up
# by the next hook run or `tx catch-up`. TOKEN_EXCHANGE_SKIP=1 skips it once.
# token-exchange-hook v2
TX_HOOK="${TOKEN_EXCHANGE_HOOK:-@TX_HOOK@}"
if [ -x "$0.local" ]; then
    @CHAIN@
fi
if ! command -v "$TX_HOOK" >/dev/null 2>&1; then
    echo "token-exchange: $TX_HOOK not found; @HOOK@ hook skipped" >&2
    exit 0
fi
err="$(mktemp 2>/dev/null || echo "${TMPDIR:-/tmp}/tx-hook.$$")"
if "$TX_HOOK" @ARGS@ 2>"$err"; then
    cat "$err" >&2
else
    echo "token-exchange: @HOOK@ hook failed: $(tail -n 1 "$err"); commit kept" >&2
fi
rm -f "$err"
exit 0
