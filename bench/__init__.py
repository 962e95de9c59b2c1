"""`make bench`: throughput, latency and memory of the fleet under realistic traffic (see bench/run.py)."""
