"""Small helpers around Prefect runs that plain code can call outside a run too."""

from __future__ import annotations

import logging


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task run (its lines reach the UI), else a plain logger
    (a step called as a plain function by a benchmark or a test)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("edgewave")
