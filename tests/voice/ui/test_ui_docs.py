"""docs/ui.md shows each screen as it renders now.

Regenerate the captures with ``python -m tests.voice.ui.captures``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .captures import SCREENS, capture

DOC = Path(__file__).resolve().parents[3] / "docs" / "ui.md"


@pytest.mark.parametrize("name", list(SCREENS))
async def test_the_doc_shows_the_screen_as_it_renders(name: str) -> None:
    shown = await capture(name)
    assert f"```text\n{shown}```" in DOC.read_text(), f"docs/ui.md is stale for {name}"
