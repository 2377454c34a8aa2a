"""Rollout faults against real site processes and a real desired-state repo.

The controller runs in-process here (no Prefect) so each fault can be injected at an exact
step; test_rollout.py covers the same controller through the CLI and the Prefect flow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgewave.serving.desired import DesiredState
from edgewave.tasks.platform import fleet
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.rollout.controller import Controller, Io, run, scrape_sites
from edgewave.tasks.rollout.gitops import DesiredStateRepo
from edgewave.tasks.rollout.policy import load_fleet_file
from edgewave.tasks.rollout.telemetry import scrape
from edgewave.tasks.sim.traffic import Traffic
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.e2e


def sha(bundle: Path) -> str:
    return json.loads((bundle / "bundle.json").read_text())["model"]["sha256"]


@pytest.fixture
def fleet_on_v1(bundles, tmp_path: Path):
    """Three local sites serving v1, and a policy with a canary and the rest."""
    home = tmp_path / "home"
    shutil.copytree(bundles.home / "keys", home / "keys", ignore=shutil.ignore_patterns("*.key"))
    settings = Settings(home=home, fleet_path=tmp_path / "fleet.yaml")

    def write_policy(**rollout) -> None:
        settings.fleet_path.write_text(yaml.safe_dump({
            "fleet": {"sites": [{"id": f"site-{i}", "port": ports[i], "labels": {"line": str(i)}} for i in range(3)]},
            "rollout": {"waves": [{"name": "canary", "count": 1}, {"name": "rest", "percent": 100}],
                        "bake_seconds": 0, "convergence_deadline_seconds": 8,
                        "analysis": {"interval_seconds": 1.5, "measurements": 2, "min_requests_per_site": 15,
                                     "max_p99_latency_ratio": 5.0, "min_confidence_ratio": 0.7,
                                     "max_failure_rate_shift": 0.3, "inconclusive_limit": 2},
                        "offline": {"deadline_seconds": 3, "then": "fail"}, **rollout},
        }))

    ports = [free_port() for _ in range(3)]
    write_policy()
    fleet_file = load_fleet_file(settings.fleet_path)
    repo = DesiredStateRepo(Path(settings.desired_state_url)).ensure()
    repo.commit([DesiredState(site=s.id, model="machine-failure", version=1, bundle_url=bundles.v1.as_uri(),
                              sha256=sha(bundles.v1), rollout_id="ro-initial") for s in fleet_file.fleet.sites], "initial")
    fleet.up(settings, fleet_file.fleet, extra_env={"EDGEWAVE_SYNC_INTERVAL_SECONDS": "0.5", "EDGEWAVE_SAMPLE_FRACTION": "0"})
    wait_for(lambda: all(r and r.version == 1 for r in scrape_sites(fleet_file.fleet.sites).values()), 30,
             "the fleet to serve v1")
    yield settings, repo, write_policy
    fleet.down(settings, fleet_file.fleet)


def controller(settings: Settings, repo: DesiredStateRepo, bundle: Path, version: int, log: list[str],
               on_log=None) -> Controller:
    fleet_file = load_fleet_file(settings.fleet_path)

    def record(line: str) -> None:
        log.append(line)
        if on_log:
            on_log(line)

    io = Io(repo=repo, read=scrape_sites, log=record)
    return Controller(fleet_file, "machine-failure", version, bundle.as_uri(), sha(bundle), 1, io)


def served(settings: Settings) -> dict[str, int]:
    return {s.id: scrape(s.scrape_url).version for s in load_fleet_file(settings.fleet_path).fleet.sites}


def test_a_site_killed_mid_wave_is_counted_failed_and_the_wave_rolls_back(fleet_on_v1, bundles) -> None:
    settings, repo, _ = fleet_on_v1
    victim = "site-2"
    pid = json.loads((settings.home / "fleet" / f"{victim}.json").read_text())["pid"]

    def kill_when_rest_is_committed(line: str) -> None:
        if "wave 2/2 (rest)" in line and "->" in line:
            os.killpg(pid, signal.SIGKILL)

    log: list[str] = []
    c = controller(settings, repo, bundles.v2, 2, log, kill_when_rest_is_committed)
    with Traffic([s for s in c.fleet.sites], rate_per_site=30):
        assert run(c) == "rolled_back", "\n".join(log)
    record = repo.record(c.id)
    assert record["waves"][1]["failed"] == [victim]
    assert "counted failed" in record["reason"]
    assert served_alive(settings) == {"site-0": 1, "site-1": 1}, "every reachable touched site is back on v1"
    assert repo.read(victim).version == 1, "the dead site's desired state is rolled back too"


def served_alive(settings: Settings) -> dict[str, int]:
    readings = scrape_sites(load_fleet_file(settings.fleet_path).fleet.sites)
    return {site: r.version for site, r in readings.items() if r is not None}


def test_a_canary_without_traffic_is_inconclusive_and_never_advanced(fleet_on_v1, bundles) -> None:
    settings, repo, _ = fleet_on_v1
    log: list[str] = []
    c = controller(settings, repo, bundles.v2, 2, log)
    assert run(c) == "held", "\n".join(log)  # no Traffic: nothing to judge
    record = repo.record(c.id)
    assert record["waves"][0]["status"] == "held" and record["waves"][1]["status"] == "pending"
    assert all(m["verdict"] == "inconclusive" for m in record["waves"][0]["measurements"])
    assert served(settings) == {"site-0": 2, "site-1": 1, "site-2": 1}, "the rest was never committed"
    assert len(repo.log(f"{c.id}: wave")) == 1


RESUMABLE = """
import json, sys
from pathlib import Path
from edgewave.tasks.rollout.gitops import DesiredStateRepo
from edgewave.tasks.rollout.policy import load_fleet_file
from edgewave.tasks.rollout.controller import Controller, Io, run, scrape_sites
fleet_path, repo_path, bundle, sha = sys.argv[1:5]
io = Io(repo=DesiredStateRepo(Path(repo_path)), read=scrape_sites, log=lambda line: print(line, flush=True))
c = Controller(load_fleet_file(fleet_path), "machine-failure", 2, Path(bundle).as_uri(), sha, 1, io)
print("RESULT", run(c), flush=True)
"""


def test_a_controller_killed_mid_wave_resumes_without_duplicate_commits(fleet_on_v1, bundles, tmp_path) -> None:
    settings, repo, write_policy = fleet_on_v1
    write_policy(bake_seconds=6)  # the controller is killed while baking the canary
    args = [sys.executable, "-c", RESUMABLE, str(settings.fleet_path), str(repo.path),
            str(bundles.v2), sha(bundles.v2)]
    cwd = Path(__file__).resolve().parents[2]
    first = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    wait_for(lambda: any("wave 1/2 (canary)" in s for s in repo.log()), 60, "the canary commit")
    wait_for(lambda: served(settings)["site-0"] == 2, 20, "the canary to converge")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    assert "RESULT" not in first.stdout.read()

    with Traffic(load_fleet_file(settings.fleet_path).fleet.sites, rate_per_site=30):
        # resume: the same rollout id, so the record in Git says where it stopped
        second = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert "RESULT succeeded" in second.stdout, second.stdout + second.stderr
    assert "resuming at wave 1/2" in second.stdout
    subjects = repo.log()
    assert sum("wave 1/2 (canary)" in s for s in subjects) == 1, subjects
    assert sum("wave 2/2 (rest)" in s for s in subjects) == 1, subjects
    assert served(settings) == {"site-0": 2, "site-1": 2, "site-2": 2}
