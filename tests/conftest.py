"""Shared fixtures.

Tests that read ../shared/data skip when it is absent (a user's machine), unless
SPEECHTOK_REQUIRE_SHARED=1 (set by .ci/run) turns the skip into a failure.
"""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SPEECHTOK_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").exists():
        msg = f"shared data not found at {SHARED_DATA}"
        if os.environ.get("SPEECHTOK_REQUIRE_SHARED") == "1":
            pytest.fail(msg + " (SPEECHTOK_REQUIRE_SHARED=1)")
        pytest.skip(msg)
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
