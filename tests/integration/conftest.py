from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.fleet import Fleet

pytestmark = pytest.mark.broker


@pytest.fixture
def fleet_factory(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Fleet]]:
    fleets: list[Fleet] = []

    def make() -> Fleet:
        fleet = Fleet(bootstrap, Path(tmp_path_factory.mktemp("fleet")))
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.close()


@pytest.fixture(scope="module")
def fleet(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One worker on fresh topics, shared by a module's tests; each test uses its own tenant."""
    fleet = Fleet(bootstrap, Path(tmp_path_factory.mktemp("fleet")))
    try:
        fleet.add_worker().wait_ready()
        yield fleet
    finally:
        fleet.close()  # also when start-up failed: no worker outlives its test


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"
