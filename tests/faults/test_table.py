"""The harness's table file: each test process replaces only the rows of the scripts it ran."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.faults import table

pytestmark = pytest.mark.faults


def _row(script: str, fault: str) -> table.Row:
    return table.Row(script, fault, "run completed", True, 1.0, "")


def test_a_process_keeps_the_rows_of_scripts_another_process_ran(tmp_path: Path) -> None:
    table.write([_row("a", "kill"), _row("a", "resume")], {"a": 10.0}, tmp_path)
    table.write([_row("b", "fill")], {"b": 20.0}, tmp_path)
    table.write([_row("a", "kill again")], {"a": 11.0}, tmp_path)
    data = json.loads((tmp_path / "faults.json").read_text())
    assert [(r["script"], r["fault"]) for r in data["rows"]] == [("b", "fill"), ("a", "kill again")]
    assert data["wall_seconds"] == {"b": 20.0, "a": 11.0}
    assert "| b | fill |" in (tmp_path / "faults.md").read_text()
