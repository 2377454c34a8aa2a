from __future__ import annotations

from pathlib import Path

import pytest

from tasks.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with every piece of state under a fresh temporary home."""
    for var in ("EDGEWAVE_TRACKING_URI", "EDGEWAVE_BUNDLE_STORE_URL", "EDGEWAVE_SIGNING_KEY_PATH"):
        monkeypatch.delenv(var, raising=False)
    return Settings(home=tmp_path / "home", train_rows=4000)
