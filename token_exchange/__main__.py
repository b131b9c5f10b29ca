"""`python -m token_exchange` is `tx`."""

from token_exchange.cli import main

main()
