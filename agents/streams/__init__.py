"""The fleet's agents. Importing this package registers them on agents.app.app."""

from agents.streams import intake, ledger

__all__ = ["intake", "ledger"]
