"""The fleet's agents. Importing this package registers them on agents.app.app."""

from agents.streams import customers, intake, ledger, opportunities, orders

__all__ = ["customers", "intake", "ledger", "opportunities", "orders"]
