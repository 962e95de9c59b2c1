"""A worker that did not stop cleanly rebuilds its tables from their changelogs (agents/__main__.py): its
local tables may be ahead of the changelogs, and faust replays only the changelogs' tail onto them."""

from __future__ import annotations

from pathlib import Path

from agents.__main__ import forget_tables_after_a_crash


def test_tables_of_a_crashed_worker_are_forgotten_and_a_clean_stop_keeps_them(tmp_path: Path) -> None:
    tables, mark = tmp_path / "v1" / "tables", tmp_path / "stopped-cleanly"
    assert not forget_tables_after_a_crash(tables, mark)  # a first start: nothing to forget
    (tables / "sku_ledger-0.db").mkdir(parents=True)
    assert forget_tables_after_a_crash(tables, mark)  # tables and no mark: the last run crashed
    assert not tables.exists()
    (tables / "sku_ledger-0.db").mkdir(parents=True)
    mark.touch()  # what a clean stop leaves
    assert not forget_tables_after_a_crash(tables, mark)
    assert (tables / "sku_ledger-0.db").exists()
    assert not mark.exists()  # a run in progress has no mark: a crash during it is seen next time
