"""The pure core: domain models and decision functions.

Nothing in this package imports faust, Kafka clients, RocksDB, Avro or Prometheus; a test enforces it.
State is frozen pydantic models; every transition takes `now` as an argument so replays are deterministic.
"""
