"""token-exchange: a token economy for AI coding agents (kept import-free for fast hooks)."""

__version__ = "0.1.0"
