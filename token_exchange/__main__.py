from token_exchange.cli import main

main()
