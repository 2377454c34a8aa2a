"""Edge → central metrics over the network: each site's Prometheus agent (Debian's prometheus in
agent mode, the config `edgewave fleet prometheus-config --remote-write` writes) remote-writes to
a central Prometheus with the receiver on, through a TCP link the test cuts and restores. Once
the link is back the agent's backlog fills the central series (no gap over the outage); a site
whose link stays cut reads as offline on the rollout's PromQL path, not as up and idle."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

from edgewave.tasks.platform.fleetfile import Fleet, load_fleet_file
from edgewave.tasks.rollout.prometheus import agent_config
from edgewave.tasks.rollout.telemetry import prometheus_readings, scrape_sites
from edgewave.tasks.sim.traffic import Traffic
from tests.helpers import (
    ALL_AT_ONCE,
    TEST_FLEET,
    ai4i_traffic,
    free_port,
    running_prometheus,
    start_site,
    stop,
    wait_for,
    write_fleet_file,
)

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian's prometheus is not installed here (scripts/setup-system.sh could not install it)")

SITES = ["site-a", "site-b"]
FRESH = 5.0  # seconds: the rollout's max sample age in this test


class Link:
    """A TCP link from an agent to the central Prometheus that can be cut (listener and every
    connection closed: the agent's writes are refused) and restored on the same port."""

    def __init__(self, target_port: int) -> None:
        self.port, self.target = free_port(), target_port
        self.lock, self.connections = threading.Lock(), []
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            try:  # shutdown wakes the thread blocked in accept(); close alone would not stop it
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
            for conn in self.connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self.connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def raw_samples(url: str, site: str, seconds: int) -> list[float]:
    """Timestamps of the central Prometheus' own samples of a site's row counter over the last `seconds`."""
    promql = f'edgewave_predicted_rows_total{{site="{site}"}}[{seconds}s]'
    with urllib.request.urlopen(f"{url}/api/v1/query?{urlencode({'query': promql})}", timeout=10) as response:
        result = json.loads(response.read())["data"]["result"]
    return sorted(float(at) for series in result for at, _ in series["values"])


def test_a_cut_link_is_backfilled_once_restored_and_a_site_still_cut_off_reads_as_offline(bundles,
                                                                                          tmp_path: Path) -> None:
    ports = {site: free_port() for site in SITES}
    sites = {site: start_site(bundles.home, port, tmp_path / f"{site}.log", "--bundle", str(bundles.v1), "--site", site)
             for site, port in ports.items()}
    fleet = Fleet.model_validate({"sites": [{"id": s, "port": p} for s, p in ports.items()]})
    links: dict[str, Link] = {}
    try:
        with running_prometheus({"global": {"scrape_interval": "1s"}}, tmp_path / "central", "receiver") as central, \
                Traffic(fleet.sites, ai4i_traffic(), rate_per_site=20):
            central_port = int(central.rsplit(":", 1)[1])
            with running_prometheus(_agent(fleet, "site-a", links, central_port), tmp_path / "agent-a", "agent"), \
                    running_prometheus(_agent(fleet, "site-b", links, central_port), tmp_path / "agent-b", "agent"):
                def read() -> dict:
                    return prometheus_readings(central, fleet.sites, TEST_FLEET, max_age_seconds=FRESH)
                wait_for(lambda: all(r is not None for r in read().values()), 60, "both sites in the central Prometheus")
                before = read()
                assert all(r.version == 1 and r.rows > 0 for r in before.values())

                cut_at = time.time()
                for link in links.values():
                    link.cut()
                wait_for(lambda: all(r is None for r in read().values()), 30,
                         "both cut-off sites to read as offline (their last samples grow old)")
                at_cut = scrape_sites(fleet.sites, TEST_FLEET)["site-a"]
                assert at_cut is not None
                # the sites keep serving through the outage; their agents keep the samples
                wait_for(lambda: (now := scrape_sites(fleet.sites, TEST_FLEET)["site-a"]) is not None
                         and now.rows >= at_cut.rows + 60, 60, "site-a to serve 60 more rows while cut off")

                links["site-a"].restore()
                restored_at = time.time()
                wait_for(lambda: read()["site-a"] is not None, 60, "site-a back in the central Prometheus")

                def over_the_outage() -> tuple[list[float], list[float]]:
                    outage = [t for t in raw_samples(central, "site-a", 120) if cut_at - 1 <= t <= restored_at + 1]
                    return outage, [b - a for a, b in zip([cut_at, *outage], [*outage, restored_at])]
                try:  # the agent's backlog is sent
                    wait_for(lambda: max(over_the_outage()[1]) < 2.5, 60, "site-a's backlog over the outage")
                except TimeoutError:
                    pass  # the assertion below says what arrived
                outage, gaps = over_the_outage()
                assert outage and max(gaps) < 2.5, f"site-a's samples over the outage: {outage} (gaps {gaps})"
                after = read()
                assert after["site-b"] is None, "a site whose link stays cut is offline, not healthy"
                assert after["site-a"].rows > before["site-a"].rows
                assert not [t for t in raw_samples(central, "site-b", 120) if t > cut_at + 1.5], \
                    "nothing of site-b arrived while its link was cut"
    finally:
        for link in links.values():
            link.cut()
        for process in sites.values():
            stop(process)


def _agent(fleet: Fleet, site: str, links: dict[str, Link], central_port: int) -> dict:
    """The agent of one site: scrapes it every 0.5 s and remote-writes through its own link."""
    links[site] = Link(central_port)
    one = Fleet.model_validate({"sites": [s.model_dump() for s in fleet.sites if s.id == site]})
    return agent_config(one, f"http://127.0.0.1:{links[site].port}/api/v1/write", 0.5, plant="test",
                        max_backoff_seconds=1.0)


def test_make_up_wires_an_agent_that_feeds_the_fleet_into_a_central_prometheus(bundles, tmp_path: Path) -> None:
    """What `make up` starts with EDGEWAVE_CENTRAL_PROMETHEUS=true: the rollout's reading of a live
    site comes from the central Prometheus, with the fleet's alert rules loaded there; `make down`
    stops both by pid."""

    from edgewave.tasks.fleet import servers
    from edgewave.tasks.platform.settings import Settings

    port = free_port()
    settings = Settings(home=tmp_path / "home", fleet_path=tmp_path / "fleet.yaml", central_prometheus=True)
    write_fleet_file(settings.fleet_path, {"line-0": port}, ALL_AT_ONCE)
    site = start_site(bundles.home, port, tmp_path / "site.log", "--bundle", str(bundles.v1), "--site", "line-0")
    sites = load_fleet_file(settings.fleet_path).fleet.sites
    try:
        central = servers.start_metrics(settings, free_port(), free_port())

        def on_v1() -> bool:
            reading = prometheus_readings(central, sites, TEST_FLEET, max_age_seconds=FRESH)["line-0"]
            return reading is not None and reading.version == 1
        wait_for(on_v1, 60, "line-0 read from the central Prometheus")
        with urllib.request.urlopen(f"{central}/api/v1/rules", timeout=10) as response:
            groups = json.loads(response.read())["data"]["groups"]
        assert "EdgewaveSiteDown" in {rule["name"] for group in groups for rule in group["rules"]}
        assert servers.links(settings)["prometheus"] == central
    finally:
        stopped = servers.down(settings)
        stop(site)
    assert stopped == ["prometheus-agent", "prometheus"]
