"""Inventory allocation worker fleet."""
