"""docs/call-states.md must show exactly the machine's transition table, so it cannot go stale."""

from __future__ import annotations

import re
from pathlib import Path

from voice.call.events import State
from voice.call.machine import transitions

DOC = Path(__file__).resolve().parents[3] / "docs" / "call-states.md"
STATES = {s.name for s in State}


def doc_rows() -> list[tuple[str, str, str]]:
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] in STATES:
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def doc_arrows() -> set[tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"```mermaid\n(.*?)```", text, re.S)
    assert block is not None, "no mermaid diagram"
    arrows = set()
    for line in block.group(1).splitlines():
        found = re.match(r"\s*(\S+)\s*-->\s*(\S+)", line)
        if found and "[*]" not in found.groups():
            arrows.add((found.group(1), found.group(2)))
    return arrows


def test_table_in_docs_lists_exactly_the_transitions() -> None:
    rows = doc_rows()
    assert len(rows) == len(set(rows)), "a row is listed twice"
    assert set(rows) == transitions()


def test_diagram_draws_exactly_the_state_changes() -> None:
    expected = {(a, b) for a, _, b in transitions() if a != b}
    assert doc_arrows() == expected
