"""The control plane's exporter and the fleet's alert rules in a real Prometheus (Debian's package).

A held rollout record committed to the desired-state remote the way the controller commits it,
and a drift-check summary with one confirmed site written to the monitoring store the way the
drift flow writes it: `edgewave exporter` serves both, Prometheus scrapes it with
deployments/prometheus/alerts.yml loaded, and EdgewaveRolloutHeld and EdgewaveDriftConfirmed
fire. While the remote is unreachable the alert stays (the exporter keeps the last state it
read and reports the read error); when the next record says the rollout succeeded, it goes away."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest

from edgewave.tasks.drift.checks import SiteCheck, summarise
from edgewave.tasks.platform.fleetfile import DriftPolicy, Fleet
from edgewave.tasks.platform.monitoring import REPORTS, MonitoringStore
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.rollout.gitops import DesiredStateRepo
from edgewave.tasks.rollout.prometheus import scrape_config
from edgewave.tasks.rollout.record import RolloutRecord, WaveRecord
from tests.helpers import BIN, DEPLOYMENTS, edgewave_env, free_port, http_ok, running_prometheus, stop, wait_for

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian's prometheus is not installed here (scripts/setup-system.sh could not install it)")

ROLLOUT_ID = "ro-machine-failure-v3-20261127T120000000Z"


def commit_record(repo: DesiredStateRepo, status: str) -> None:
    record = RolloutRecord(
        id=ROLLOUT_ID, model="machine-failure", version=3, from_version=2, status=status,
        reason="inconclusive 3 times" if status == "held" else "all 1 waves advanced",
        waves=[WaveRecord(index=0, name="canary", sites=["plant-a-line-1"], status="held" if status == "held" else "advanced")],
        started_at=datetime.now(UTC))
    repo.commit([], f"{ROLLOUT_ID}: {status}", record=(ROLLOUT_ID, record.model_dump(mode="json")))


def write_drift_summary(settings: Settings) -> None:
    checks = [SiteCheck(site="plant-a-line-1", check_id="drift-1", status="checked"),
              SiteCheck(site="plant-a-line-3", check_id="drift-1", status="checked", drifted=True, confirmed=True)]
    summary = summarise("drift-1", "machine-failure", checks, DriftPolicy(min_sites=1))
    MonitoringStore.of(settings).write_json(summary.model_dump(), *REPORTS, "drift-1", "summary.json")


def metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def query(url: str, promql: str) -> float | None:
    """The value of an instant query with one series, else None."""
    with urllib.request.urlopen(f"{url}/api/v1/query?{urlencode({'query': promql})}", timeout=5) as response:
        result = json.loads(response.read())["data"]["result"]
    return float(result[0]["value"][1]) if len(result) == 1 else None


def evaluated_after(url: str, moment: float, times: int = 1) -> bool:
    """Every rule group has been evaluated `times` intervals after `moment` (a Unix time)."""
    with urllib.request.urlopen(f"{url}/api/v1/rules", timeout=5) as response:
        groups = json.loads(response.read())["data"]["groups"]
    return bool(groups) and all(
        datetime.fromisoformat(g["lastEvaluation"]).timestamp() >= moment + (times - 1) * g["interval"] for g in groups)


def firing(url: str) -> dict[str, list[dict]]:
    with urllib.request.urlopen(f"{url}/api/v1/alerts", timeout=5) as response:
        alerts = json.loads(response.read())["data"]["alerts"]
    found: dict[str, list[dict]] = {}
    for alert in alerts:
        if alert["state"] == "firing":
            found.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
    return found


def test_a_held_rollout_and_confirmed_drift_fire_their_alerts_from_the_exporter(tmp_path: Path) -> None:
    home = tmp_path / "control-plane"
    settings = Settings(home=home)
    repo = DesiredStateRepo.of(settings).ensure()
    commit_record(repo, "held")
    write_drift_summary(settings)

    port = free_port()
    exporter = subprocess.Popen([str(BIN / "edgewave"), "exporter", "--port", str(port), "--refresh", "1"],
                                env=edgewave_env(home), stdout=open(tmp_path / "exporter.log", "wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/metrics") or exporter.poll() is not None, 60,
                 "the exporter")
        assert exporter.poll() is None, (tmp_path / "exporter.log").read_text()
        text = metrics(port)
        assert f'edgewave_rollout_status{{kind="rollout",model="machine-failure",rollout_id="{ROLLOUT_ID}",' \
               'status="held",version="3"} 1.0' in text, text
        assert 'edgewave_drift_site_confirmed{model="machine-failure",site="plant-a-line-3"} 1.0' in text
        assert 'edgewave_drift_site_confirmed{model="machine-failure",site="plant-a-line-1"} 0.0' in text
        assert 'edgewave_control_plane_read_errors{source="desired_state"} 0.0' in text

        shutil.copy(DEPLOYMENTS / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
        fleet = Fleet.model_validate({"sites": [{"id": "plant-a-line-1", "port": free_port()}]})
        config = scrape_config(fleet, 0.5, exporter=f"127.0.0.1:{port}", rule_files=[str(tmp_path / "alerts.yml")])
        with running_prometheus(config, tmp_path) as url:
            wait_for(lambda: {"EdgewaveRolloutHeld", "EdgewaveDriftConfirmed"} <= firing(url).keys(), 60,
                     "the held-rollout and drift alerts")
            alerts = firing(url)
            assert [a["rollout_id"] for a in alerts["EdgewaveRolloutHeld"]] == [ROLLOUT_ID]
            assert [a["site"] for a in alerts["EdgewaveDriftConfirmed"]] == ["plant-a-line-3"]

            remote = Path(repo.remote.removeprefix("file://"))
            remote.rename(remote.with_name("away"))  # the remote goes away: the last known state stays
            wait_for(lambda: 'edgewave_control_plane_read_errors{source="desired_state"} 1.0' in metrics(port), 30,
                     "the exporter to report the unreadable remote")
            seen = time.time()
            # Prometheus has scraped the exporter's error and evaluated the rules on it, twice
            wait_for(lambda: query(url, 'edgewave_control_plane_read_errors{source="desired_state"}') == 1.0
                     and evaluated_after(url, seen, times=2), 30, "two rule evaluations after the remote went away")
            assert "EdgewaveRolloutHeld" in firing(url), "an unreachable remote does not resolve the alert"
            remote.with_name("away").rename(remote)

            commit_record(repo, "succeeded")  # a person looked and resumed it
            wait_for(lambda: "EdgewaveRolloutHeld" not in firing(url), 60, "the held alert to resolve")
    finally:
        stop(exporter)
