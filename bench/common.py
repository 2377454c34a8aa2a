"""What several benchmarks share."""

from __future__ import annotations

import time


def prefect_api_startup_seconds() -> float:
    """Run an empty flow: starts Prefect's temporary API (a deployed flow does not pay this), timed."""
    from prefect import flow

    @flow(name="bench-warm-up")
    def warm_up() -> None:
        return None

    start = time.perf_counter()
    warm_up()
    return time.perf_counter() - start
