from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    from tests.support.broker import kafka_bootstrap

    with kafka_bootstrap() as servers:
        yield servers
