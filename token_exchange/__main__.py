from token_exchange.entry import tx

tx()
