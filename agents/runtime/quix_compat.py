"""The one place the fleet touches a Quix Streams internal.

Quix's public State is scoped to the message key. Pricing an order (message key: the customer) reads the
partition's copy of the catalog, filed under the partition key (agents/runtime/partitions.py), and the
expiry and backorder indexes of a partition are read and written from the entity whose message is being
processed. Both need the state of another key of the same store partition, inside the same transaction,
so that it is checkpointed, changelogged and recovered with the rest.

`TransactionState` keeps its `PartitionTransaction` as `_transaction`; the transaction's `as_state(prefix)`
is public on the transaction. tests/unit/test_quix_compat.py fails when Quix changes either.
"""

from __future__ import annotations

from typing import Any

from quixstreams.state.base.state import TransactionState


def sibling(state: Any, key: bytes) -> Any:
    """The state of `key` in the same store partition and transaction as `state`."""
    if not isinstance(state, TransactionState):
        raise TypeError(f"expected a Quix TransactionState, got {type(state).__name__}")
    return state._transaction.as_state(prefix=key)
