#!/bin/sh
# token-exchange @HOOK@ hook: @PURPOSE@
# Installed by `tx hooks install`; `tx hooks uninstall` removes it and restores a hook it chained.
# It never blocks or breaks a commit: any problem is one line, and what it could not pay is caught up
# by the next hook run or `tx catch-up`. TOKEN_EXCHANGE_SKIP=1 skips it once.
# token-exchange-hook v3
TX_HOOK="${TOKEN_EXCHANGE_HOOK:-@TX_HOOK@}"
if [ -x "$0.local" ]; then
    @CHAIN@
fi
if ! command -v "$TX_HOOK" >/dev/null 2>&1; then
    echo "token-exchange: $TX_HOOK not found; @HOOK@ hook skipped" >&2
    exit 0
fi
# Its stderr is held back (stdout goes straight through, on fd 3) and shown after it, or, if it failed,
# only its last line; in the shell's memory: no temporary file, no extra process on every commit.
exec 3>&1
if err="$("$TX_HOOK" @ARGS@ 2>&1 >&3 3>&-)"; then
    [ -z "$err" ] || printf '%s\n' "$err" >&2
else
    nl='
'
    echo "token-exchange: @HOOK@ hook failed: ${err##*"$nl"}; commit kept" >&2
fi
exit 0
