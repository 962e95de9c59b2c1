"""The pure core: domain models and decision functions.

Nothing in this package imports the stream runtime, Kafka clients, RocksDB, Avro, HTTP or Prometheus; a
test enforces it.
State is frozen pydantic models; every transition takes `now` as an argument so replays are deterministic.
"""
