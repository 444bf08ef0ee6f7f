"""Locate the reference material in <project root>/../shared; skip (with the reason) when it is absent."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def shared(*parts) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"reference material not found at {p} (../shared is absent in this checkout)")
    return p
