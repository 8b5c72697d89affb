"""Shared fixtures. Integration tests live in tests/integration and need Docker."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOPOLOGIES = REPO / "topologies"


@pytest.fixture
def topologies_dir() -> Path:
    return TOPOLOGIES
