"""`python -m token_exchange.hooks` is `tx-hook`."""

from token_exchange.hooks import main

main()
