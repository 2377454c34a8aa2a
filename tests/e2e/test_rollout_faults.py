"""Rollout faults against real site processes, a real desired-state repo and MLflow registry,
through the rollout flow users run (in-process, or as `edgewave rollout` when the controller
itself is killed). Faults are injected by watching Git for the wave's commit."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml

from edgewave.flows.rollout import result_of, rollback, rollout
from edgewave.serving.desired import DesiredState
from edgewave.tasks.fleet import local
from edgewave.tasks.platform.fleetfile import load_fleet_file
from edgewave.tasks.platform.settings import Settings, use
from edgewave.tasks.release import registry
from edgewave.tasks.rollout.gitops import DesiredStateRepo
from edgewave.tasks.rollout.telemetry import scrape, scrape_sites
from edgewave.tasks.sim.traffic import Traffic
from tests.helpers import (
    BIN,
    ai4i_traffic,
    edgewave_env,
    free_port,
    register_bundle,
    remote_subjects,
    wait_for,
    write_fleet_file,
)


def sha(bundle: Path) -> str:
    return json.loads((bundle / "bundle.json").read_text())["model"]["sha256"]


@pytest.fixture
def fleet_on_v1(bundles, exported, tmp_path: Path):
    """Three local sites serving v1 (@production), v2 registered, and a policy with a canary and the rest."""
    home = tmp_path / "home"
    shutil.copytree(bundles.home / "keys", home / "keys")
    settings = Settings(home=home, fleet_path=tmp_path / "fleet.yaml")
    settings.apply_runtime_environment()

    def write_policy(**rollout_policy) -> None:
        write_fleet_file(
            settings.fleet_path, [{"id": f"site-{i}", "port": ports[i], "labels": {"line": str(i)}} for i in range(3)],
            analysis={"interval_seconds": 1.5, "measurements": 2, "min_requests_per_site": 15,
                      "max_p99_latency_ratio": 5.0, "min_confidence_ratio": 0.7,
                      "max_failure_rate_shift": 0.3, "inconclusive_limit": 2},
            **{"bake_seconds": 0, "convergence_deadline_seconds": 8, "offline": {"deadline_seconds": 3, "then": "fail"},
               **rollout_policy})

    ports = [free_port() for _ in range(3)]
    write_policy()
    assert register_bundle(settings, "sklearn", bundles.v1, exported["sklearn"].model) == 1
    assert register_bundle(settings, "torch", bundles.v2, exported["torch"].model) == 2
    registry.promote(settings, 1)
    fleet_file = load_fleet_file(settings.fleet_path)
    repo = DesiredStateRepo.of(settings).ensure()
    repo.commit([DesiredState(site=s.id, model="machine-failure", version=1, bundle_url=bundles.v1.as_uri(),
                              sha256=sha(bundles.v1), rollout_id="ro-initial") for s in fleet_file.fleet.sites], "initial")
    local.up(settings, fleet_file.fleet, extra_env={"EDGEWAVE_SYNC_INTERVAL_SECONDS": "0.5", "EDGEWAVE_SAMPLE_FRACTION": "0"})
    wait_for(lambda: all(r and r.version == 1 for r in scrape_sites(fleet_file.fleet.sites, settings.fleet_identity()).values()), 30,
             "the fleet to serve v1")
    yield settings, repo, write_policy
    local.down(settings, fleet_file.fleet)


def when_pushed(repo: DesiredStateRepo, subject: str, action) -> threading.Thread:
    """Run `action` as soon as a commit whose subject contains `subject` reaches the remote."""
    def watch() -> None:
        wait_for(lambda: any(subject in s for s in remote_subjects(repo.remote)), 120, f"a commit with {subject!r}",
                 interval=0.1)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def remote_head(remote: str) -> str:
    return subprocess.run(["git", "--git-dir", remote, "rev-parse", "main"], capture_output=True, text=True,
                          check=True).stdout.strip()


def served(settings: Settings) -> dict[str, int]:
    return {s.id: scrape(s.scrape_url).version for s in load_fleet_file(settings.fleet_path).fleet.sites}


def served_alive(settings: Settings) -> dict[str, int]:
    readings = scrape_sites(load_fleet_file(settings.fleet_path).fleet.sites, settings.fleet_identity())
    return {site: r.version for site, r in readings.items() if r is not None}


def test_a_site_killed_mid_wave_is_counted_failed_and_the_wave_rolls_back(fleet_on_v1) -> None:
    settings, repo, _ = fleet_on_v1
    victim = "site-2"
    pid = json.loads((settings.home / "fleet" / f"{victim}.json").read_text())["pid"]
    killer = when_pushed(repo, "wave 2/2 (rest)", lambda: os.killpg(pid, signal.SIGKILL))
    with Traffic(load_fleet_file(settings.fleet_path).fleet.sites, ai4i_traffic(), rate_per_site=30), use(settings):
        state = rollout(2, return_state=True)
    killer.join(5)
    result = result_of(state)
    assert result["status"] == "rolled_back", result
    assert state.is_failed() and state.name == "RolledBack", "the runs list shows the rollout went wrong"
    record = repo.record(result["rollout_id"])
    assert record["waves"][1]["failed"] == [victim]
    assert "counted failed" in record["reason"]
    assert served_alive(settings) == {"site-0": 1, "site-1": 1}, "every reachable touched site is back on v1"
    assert repo.read(victim).version == 1, "the dead site's desired state is rolled back too"
    assert registry.alias_version(settings, "production") == 1


def test_a_rollout_from_another_home_never_takes_the_sites_on_its_ports_for_its_own(fleet_on_v1, bundles, exported,
                                                                                    tmp_path: Path) -> None:
    """A second control plane with the same fleet file (same site ids and ports) while the first one's
    sites still listen there: they state another fleet, so none converges, none is judged healthy."""
    settings, repo, _ = fleet_on_v1
    other = Settings(home=tmp_path / "other-home", fleet_path=settings.fleet_path)
    shutil.copytree(bundles.home / "keys", other.home / "keys")
    assert register_bundle(other, "sklearn", bundles.v1, exported["sklearn"].model) == 1
    assert register_bundle(other, "torch", bundles.v2, exported["torch"].model) == 2
    registry.promote(other, 1)
    assert other.fleet_identity() != settings.fleet_identity()
    with Traffic(load_fleet_file(settings.fleet_path).fleet.sites, ai4i_traffic(), rate_per_site=30), use(other):
        state = rollout(2, return_state=True)
    result = result_of(state)
    assert result["status"] == "rolled_back" and state.is_failed(), result
    record = DesiredStateRepo.of(other).record(result["rollout_id"])
    assert record["waves"][0]["failed"] == ["site-0"] and record["waves"][0]["converged"] == [], record["waves"][0]
    assert registry.alias_version(other, "production") == 1
    assert served(settings) == {"site-0": 1, "site-1": 1, "site-2": 1}, "the first fleet's sites never moved"


def test_a_rewrite_mid_rollout_holds_it_a_canary_sent_back_is_no_pass_and_reconcile_frees_the_model(
        fleet_on_v1, bundles, tmp_path: Path) -> None:
    """Once the canary serves v2, a person force-pushes the remote back to before the canary's commit,
    sending site-0 back to v1 (marked as a rollback, so its agent applies it)."""
    settings, repo, write_policy = fleet_on_v1
    write_policy(bake_seconds=4)
    person = tmp_path / "person"
    subprocess.run(["git", "clone", "--quiet", repo.remote, str(person)], check=True, capture_output=True)

    baking = threading.Event()

    class Baking(logging.Handler):
        """The controller's word that its wait for the canary is over: it bakes once it read v2 from site-0 (or
        its deadline passed), and site-0 stays on v2 until the rewrite below."""

        def emit(self, record: logging.LogRecord) -> None:
            if "wave canary: baking" in record.getMessage():
                baking.set()

    def rewrite() -> None:
        # on the controller's word, not on the site's: waiting for the site, the rewrite sent it back after
        # 0.45 s on v2, between two of the controller's polls, and the canary read as never converged (offline)
        wait_for(baking.is_set, 30, "the controller to read v2 from the canary and start baking")

        def run(*args: str) -> None:
            subprocess.run(["git", "-c", "user.name=person", "-c", "user.email=p@example.invalid", *args], cwd=person,
                           check=True, capture_output=True)
        run("fetch", "--quiet", "origin", "main")
        run("reset", "--quiet", "--hard", "origin/main~1")  # the commit before the canary's
        back = DesiredState(site="site-0", model="machine-failure", version=1, bundle_url=bundles.v1.as_uri(),
                            sha256=sha(bundles.v1), rollout_id="person-rewrite", rollback=True)
        (person / "sites" / "site-0.yaml").write_text(yaml.safe_dump(back.model_dump(mode="json", exclude_none=True)))
        run("commit", "--quiet", "-am", "person: site-0 back to v1, history rewritten")
        run("push", "--quiet", "--force", "origin", "HEAD:main")
        wait_for(lambda: served(settings)["site-0"] == 1, 30, "site-0 to follow the rewritten history back to v1")

    handler = Baking()
    logging.getLogger("prefect.flow_runs").addHandler(handler)
    try:
        rewriter = when_pushed(repo, "wave 1/2 (canary)", rewrite)
        with Traffic(load_fleet_file(settings.fleet_path).fleet.sites, ai4i_traffic(), rate_per_site=30), use(settings):
            state = rollout(2, return_state=True)
        rewriter.join(5)
    finally:
        logging.getLogger("prefect.flow_runs").removeHandler(handler)
    result = result_of(state)
    assert result["status"] == "held" and state.name == "Held", result
    assert "rewritten" in result["reason"] and "edgewave reconcile" in result["reason"], result["reason"]
    canary = result["waves"][0]
    assert canary["decision"] == "rollback" and "site-0 serves v1, not the wave's v2" in canary["reason"], canary
    assert remote_subjects(repo.remote)[0] == "person: site-0 back to v1, history rewritten", "nothing pushed after"

    env = edgewave_env(settings.home, EDGEWAVE_FLEET_PATH=str(settings.fleet_path))
    again = subprocess.run([str(BIN / "edgewave"), "rollout", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2, again.stdout + again.stderr
    assert "rollout refused" in again.stderr and "edgewave reconcile" in again.stderr, again.stderr[-2000:]

    reconciled = subprocess.run([str(BIN / "edgewave"), "reconcile"], env=env, capture_output=True, text=True,
                                timeout=300)
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert f"released the lease of {result['rollout_id']}" in reconciled.stderr, reconciled.stderr
    assert subprocess.run(["git", "--git-dir", repo.remote, "cat-file", "-e", "main:leases/machine-failure.json"],
                          capture_output=True).returncode != 0, "the held attempt's lease is gone from the remote"
    # what the next rollout does first: its clone follows the remote again, and no lease stands in its way
    assert repo.sync() == remote_head(repo.remote) and repo.read_file("leases/machine-failure.json") is None


def test_a_canary_without_traffic_is_inconclusive_and_never_advanced(fleet_on_v1) -> None:
    settings, repo, _ = fleet_on_v1
    with use(settings):
        state = rollout(2, return_state=True)  # no Traffic: nothing to judge
    result = result_of(state)
    assert result["status"] == "held", result
    assert state.is_failed() and state.name == "Held"
    record = repo.record(result["rollout_id"])
    assert record["waves"][0]["status"] == "held" and record["waves"][1]["status"] == "pending"
    assert all(m["verdict"] == "inconclusive" for m in record["waves"][0]["measurements"])
    assert served(settings) == {"site-0": 2, "site-1": 1, "site-2": 1}, "the rest was never committed"
    assert len(repo.log(f"{result['rollout_id']}: wave")) == 1
    assert registry.alias_version(settings, "production") == 1


def test_a_controller_killed_mid_wave_resumes_without_duplicate_commits(fleet_on_v1) -> None:
    settings, repo, write_policy = fleet_on_v1
    write_policy(bake_seconds=8)  # the controller is killed while baking the canary
    command = [str(BIN / "edgewave"), "rollout", "2"]
    env = edgewave_env(settings.home, EDGEWAVE_FLEET_PATH=str(settings.fleet_path))
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        wait_for(lambda: any("wave 1/2 (canary)" in s for s in remote_subjects(repo.remote)), 120, "the canary commit")
        wait_for(lambda: served(settings)["site-0"] == 2, 20, "the canary to converge")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    assert '"status"' not in first.stdout.read(), "the first run was killed before it finished"

    with Traffic(load_fleet_file(settings.fleet_path).fleet.sites, ai4i_traffic(), rate_per_site=30):
        # resume: the same rollout id, so the record in Git says where it stopped
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1])["status"] == "succeeded"
    assert "resuming at wave 1/2" in second.stderr
    subjects = remote_subjects(repo.remote)
    assert sum("wave 1/2 (canary)" in s for s in subjects) == 1, subjects
    assert sum("wave 2/2 (rest)" in s for s in subjects) == 1, subjects
    assert served(settings) == {"site-0": 2, "site-1": 2, "site-2": 2}
    assert registry.alias_version(settings, "production") == 2


def test_another_writer_pushing_between_waves_keeps_a_linear_history_with_their_change(fleet_on_v1,
                                                                                       tmp_path: Path) -> None:
    settings, repo, _ = fleet_on_v1
    person = tmp_path / "person"
    subprocess.run(["git", "clone", "--quiet", repo.remote, str(person)], check=True, capture_output=True)

    def hotfix() -> None:  # a person's commit lands on the remote after the canary wave
        def run(*args: str) -> None:
            subprocess.run(["git", "-c", "user.name=person", "-c", "user.email=p@example.invalid", *args], cwd=person,
                           check=True, capture_output=True)
        run("pull", "--quiet", "--ff-only", "origin", "main")
        (person / "NOTES.md").write_text("line 3 is in maintenance until Friday\n")
        run("add", "NOTES.md")
        run("commit", "--quiet", "-m", "person: maintenance note")
        run("push", "--quiet", "origin", "HEAD:main")

    writer = when_pushed(repo, "wave 1/2 (canary)", hotfix)
    with Traffic(load_fleet_file(settings.fleet_path).fleet.sites, ai4i_traffic(), rate_per_site=30), use(settings):
        result = result_of(rollout(2, return_state=True))
    writer.join(5)
    assert result["status"] == "succeeded", result
    subjects = remote_subjects(repo.remote)
    assert subjects.index("person: maintenance note") > subjects.index(next(s for s in subjects if "wave 2/2" in s))
    merges = subprocess.run(["git", "--git-dir", repo.remote, "rev-list", "--merges", "main"], capture_output=True,
                            text=True, check=True).stdout
    assert merges == "", "linear history: the controller rebuilt its commits on the new head, never merged or forced"
    note = subprocess.run(["git", "--git-dir", repo.remote, "show", "main:NOTES.md"], capture_output=True, text=True,
                          check=True).stdout
    assert note == "line 3 is in maintenance until Friday\n", "the other writer's change is intact"
    assert served(settings) == {"site-0": 2, "site-1": 2, "site-2": 2}


def test_two_rollouts_started_together_one_runs_and_the_other_is_refused_naming_it(fleet_on_v1) -> None:
    settings, repo, write_policy = fleet_on_v1
    write_policy(bake_seconds=15)  # the first attempt holds the lease longer than the second takes to start
    env = edgewave_env(settings.home, EDGEWAVE_FLEET_PATH=str(settings.fleet_path))
    with Traffic(load_fleet_file(settings.fleet_path).fleet.sites, ai4i_traffic(), rate_per_site=30):
        runs = [subprocess.Popen([str(BIN / "edgewave"), "rollout", "2"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [run.communicate(timeout=300) for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 2], "\n\n".join(f"exit {run.returncode}:\n{err[-4000:]}" for (_, err), run in zip(outputs, runs))
    winner = json.loads(next(out for (out, _), run in zip(outputs, runs) if run.returncode == 0).strip().splitlines()[-1])
    refused = next(err for (_, err), run in zip(outputs, runs) if run.returncode == 2)
    assert "rollout refused" in refused and winner["rollout_id"] in refused, refused
    subjects = remote_subjects(repo.remote)
    assert sum("wave 1/2 (canary)" in s for s in subjects) == 1, "only one attempt ever committed a wave"
    assert served(settings) == {"site-0": 2, "site-1": 2, "site-2": 2}


CRASH_AT_PROMOTION = """
import os, sys
from edgewave.tasks.platform.settings import Settings
Settings().apply_runtime_environment()  # as the command line does before Prefect loads
from edgewave.tasks.rollout import steps
steps.promote.fn = lambda *args, **kwargs: os._exit(9)  # the controller dies right after the record's final commit
from edgewave.flows.cli import app
sys.argv = ["edgewave", "rollout", "2"]
app()
"""


def test_a_crash_between_the_final_commit_and_the_alias_move_is_repaired_by_the_next_run(fleet_on_v1,
                                                                                        tmp_path: Path) -> None:
    settings, repo, _ = fleet_on_v1
    env = edgewave_env(settings.home, EDGEWAVE_FLEET_PATH=str(settings.fleet_path))
    with Traffic(load_fleet_file(settings.fleet_path).fleet.sites, ai4i_traffic(), rate_per_site=30):
        log = tmp_path / "crashed.log"
        with open(log, "w") as output:  # a file, not a pipe: the dead controller's Prefect server child keeps pipes open
            crashed = subprocess.Popen([sys.executable, "-c", CRASH_AT_PROMOTION], env=env, stdout=output,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            try:
                crashed.wait(300)
            finally:
                try:
                    os.killpg(crashed.pid, signal.SIGKILL)  # what the crash left running, by its process group
                except ProcessLookupError:
                    pass
    assert crashed.returncode == 9, log.read_text()[-3000:]
    assert any(": succeeded: all 2 waves advanced" in s for s in remote_subjects(repo.remote))
    assert registry.alias_version(settings, "production") == 1, "the crash left the registry behind the record"

    again = subprocess.run([str(BIN / "edgewave"), "rollout", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["status"] == "noop", "the sites were already on v2"
    assert (registry.alias_version(settings, "production"), registry.alias_version(settings, "previous")) == (2, 1)
    assert sum(": wave" in s for s in remote_subjects(repo.remote)) == 2, "no wave was committed again"
    assert repo.sync() and repo.read_file("leases/machine-failure.json") is None, "the lease was released"


def test_a_site_with_a_corrupt_applied_record_restarts_on_its_cached_bundle_and_the_rollout_goes_on(fleet_on_v1) -> None:
    settings, repo, _ = fleet_on_v1
    fleet_file = load_fleet_file(settings.fleet_path)
    local.down(settings, fleet_file.fleet)
    (settings.home / "sites" / "site-1" / "applied.json").write_text('{"version": 1, "sha')  # torn write
    local.up(settings, fleet_file.fleet, extra_env={"EDGEWAVE_SYNC_INTERVAL_SECONDS": "0.5",
                                                   "EDGEWAVE_SAMPLE_FRACTION": "0"})
    assert served(settings)["site-1"] == 1, "the site serves its last-known-good bundle from the cache"
    assert list((settings.home / "sites" / "site-1").glob("applied.json.corrupt-*")), "the bad file was set aside"
    with Traffic(fleet_file.fleet.sites, ai4i_traffic(), rate_per_site=30), use(settings):
        result = result_of(rollout(2, return_state=True))
    assert result["status"] == "succeeded", result
    assert served(settings) == {"site-0": 2, "site-1": 2, "site-2": 2}


def test_a_downgrade_not_marked_as_rollback_is_refused_and_a_rollback_is_applied(fleet_on_v1, bundles) -> None:
    settings, repo, _ = fleet_on_v1
    with Traffic(load_fleet_file(settings.fleet_path).fleet.sites, ai4i_traffic(), rate_per_site=30), use(settings):
        assert result_of(rollout(2, return_state=True))["status"] == "succeeded"
    sneaky = DesiredState(site="site-0", model="machine-failure", version=1, bundle_url=bundles.v1.as_uri(),
                          sha256=sha(bundles.v1), rollout_id="hand-edit")
    repo.commit([sneaky], "someone moves site-0 back to v1 by hand")
    site0 = load_fleet_file(settings.fleet_path).fleet.site("site-0")

    def refused() -> float:
        text = urllib.request.urlopen(site0.scrape_url, timeout=3).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith('edgewave_agent_errors_total{kind="downgrade_refused"}'))
    wait_for(lambda: refused() > 0, 20, "the agent to refuse the unmarked downgrade")
    assert served(settings)["site-0"] == 2
    with Traffic(load_fleet_file(settings.fleet_path).fleet.sites, ai4i_traffic(), rate_per_site=30), use(settings):
        state = rollback(to=1, reason="return to v1", return_state=True)
    assert result_of(state)["status"] == "succeeded" and state.name == "Completed"
    assert served(settings) == {"site-0": 1, "site-1": 1, "site-2": 1}, "a marked rollback is applied"
    assert registry.alias_version(settings, "production") == 1
