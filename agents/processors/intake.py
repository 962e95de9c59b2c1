"""Input intake: decode and validate every upstream record, then re-key it onto the internal topic of the
entity that owns it (never trusting upstream partitioning). Bad input goes to the DLQ with its reason.

Stateless. A product is also broadcast to every partition of the customer topic, keyed with that
partition's key (agents/runtime/partitions.py), where the customer processor keeps the partition's copy of
the catalog for pricing.
"""

from __future__ import annotations

import time
from typing import Any

from agents.codec import Codec, DecodeError, RegistryUnavailable
from agents.core.events import InvalidEvent, check_tenant_key, parse_input
from agents.core.ids import entity_key
from agents.core.routing import route
from agents.envelope import Envelope, SourceRef
from agents.metrics import EVENTS_PROCESSED, PROCESSING_SECONDS
from agents.processors.base import MAX_ORIGINAL_BYTES, Out, Where, checked, child, dead_letter_out, log
from agents.runtime.partitions import partition_keys

# The accepted copy of one input (its envelope without the upstream bytes) stays under this, so that the
# state derived from it (a saga holds its lines a few times over) stays under MAX_RECORD_BYTES.
MAX_INTERNAL_BYTES = 160 * 1024

# Every input topic whose owner runs in the fleet (the others join as their flows land).
INPUTS = (
    "products",
    "stock_movements",
    "customers",
    "customer_pricing",
    "opportunities",
    "orders",
    "shipments",
)


class Intake:
    def __init__(self, topic_id: str, codec: Codec, partitions: dict[str, int]) -> None:
        self.topic_id = topic_id
        self.codec = codec
        self.partitions = partitions  # topic id -> partition count, for broadcasts

    def __call__(self, value: bytes | None, key: bytes | None, timestamp: int, headers: Any, where: Where) -> list[Out]:
        started = time.perf_counter()
        payload: Any = None
        try:
            payload = self.codec.decode(value, self.topic_id)
            parsed = parse_input(self.topic_id, payload)
            check_tenant_key(key, parsed.tenant_id)
            target = route(parsed)
            source = SourceRef(
                topic=where.topic, partition=where.partition, offset=where.offset, key=key, timestamp=timestamp / 1000
            )
            small = value is not None and len(value) <= MAX_ORIGINAL_BYTES
            carried = dict(headers) if small and headers else None
            accepted = parsed.model_dump_json()
            body = Envelope(
                kind=parsed.event_type,
                source=source,
                body=accepted,
                original=value if small else None,
                original_headers=carried,
            ).to_bytes()
            out = [Out(target.topic_id, entity_key(target.tenant_id, target.entity_id), body)]
            if target.broadcast_to:
                out.extend(
                    Out(target.broadcast_to, pk, body) for pk in partition_keys(self.partitions[target.broadcast_to])
                )
            if len(accepted) > MAX_INTERNAL_BYTES:
                raise InvalidEvent(
                    "TooLarge",
                    f"{parsed.event_type} is {len(accepted)} bytes once accepted, over the bound of {MAX_INTERNAL_BYTES}"
                    " (fewer lines or shorter fields)",
                )
            checked(out)
        except (DecodeError, InvalidEvent) as exc:
            return [self._dead_letter(where, key, value, headers, exc.error, exc.reason, payload)]
        except RegistryUnavailable:
            raise  # not the record's fault: the application stops and starts again on the same offsets
        except Exception as exc:  # never let one record stop the partition
            log.exception("intake %s failed on %s[%d]@%d", self.topic_id, where.topic, where.partition, where.offset)
            return [
                self._dead_letter(where, key, value, headers, type(exc).__name__, f"unexpected error: {exc}", payload)
            ]
        child(EVENTS_PROCESSED, self.topic_id, "accepted").inc()
        child(PROCESSING_SECONDS, f"intake.{self.topic_id}").observe(time.perf_counter() - started)
        return out

    def _dead_letter(
        self, where: Where, key: bytes | None, value: bytes | None, headers: Any, error: str, reason: str, payload: Any
    ) -> Out:
        tenant = payload.get("tenant_id") if isinstance(payload, dict) else None
        return dead_letter_out(
            self.topic_id,
            source_topic=where.topic,
            source_partition=where.partition,
            source_offset=where.offset,
            error=error,
            reason=reason,  # dead_letter_out bounds it
            key=key,
            value=value,
            headers=headers,
            tenant_id=tenant[:64] if isinstance(tenant, str) else None,
        )
