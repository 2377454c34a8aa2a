"""e2e commands talk to one real Prefect server per test session, as they do after `edgewave up`.

Without a server every `edgewave` command starts Prefect's temporary API of its own: a second
Python process importing all of Prefect's server and checking its database: `edgewave rollout 99`
took 50 s of CPU that way against 22 s with a server (quiet machine, measured twice), for each of
the ~40 commands these tests run. A test marked `temporary_api` keeps that default (what `make run` does), and the integration
tests (tests/integration/test_cli_errors.py among them) run every command on it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` (no scheduler: only the tests' own runs) on 127.0.0.1; its API URL."""
    from edgewave.tasks.fleet import servers
    from edgewave.tasks.platform.settings import Settings
    from tests.helpers import free_port

    settings = Settings(home=tmp_path_factory.mktemp("prefect-server"))
    env = servers.server_env(settings, "", "")
    env = {k: v for k, v in env.items() if k not in ("PREFECT_API_URL", "EDGEWAVE_TRACKING_URI")}
    try:
        yield servers.start_prefect(settings, free_port(), env, scheduler=False, log=lambda _line: None, timeout=180)
    finally:
        servers.down(settings)


@pytest.fixture(autouse=True)
def _commands_use_the_prefect_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """`edgewave` commands started through tests.helpers.edgewave_env get PREFECT_API_URL."""
    if request.node.get_closest_marker("temporary_api") is None:
        monkeypatch.setenv("EDGEWAVE_TEST_PREFECT_API_URL", request.getfixturevalue("prefect_server"))
