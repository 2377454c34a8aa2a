"""Rollouts over a real local fleet: site processes, Git desired state, MLflow registry, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgewave.tasks.fleet import local
from edgewave.tasks.platform.fleetfile import load_fleet_file
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release import registry
from edgewave.tasks.release.bundle import build_manifest, load_or_create_signing_key, write_bundle
from edgewave.tasks.rollout.gitops import DesiredStateRepo
from edgewave.tasks.rollout.telemetry import scrape
from edgewave.tasks.sim.traffic import Traffic
from tests.helpers import (
    BIN,
    ai4i_traffic,
    edgewave_env,
    free_port,
    register_bundle,
    wait_for,
    write_fleet_file,
)


def _world(bundles, split, trained, exported, tmp_path: Path):
    """Six local sites, a registry with a good sklearn v1, a good torch v2, a bad v3 and a good sklearn v4."""
    home = tmp_path / "home"
    shutil.copytree(bundles.home / "keys", home / "keys")
    settings = Settings(home=home, fleet_path=tmp_path / "fleet.yaml")
    settings.apply_runtime_environment()
    store = home / "bundles" / "machine-failure"
    shutil.copytree(bundles.v1, store / "v1")
    shutil.copytree(bundles.v2, store / "v2")
    bad = build_manifest(  # threshold 0: flags every row as a failure, whatever the model: the canary must catch it
        name="machine-failure", version=3, family="sklearn", model=exported["sklearn"].model, int8_model=None,
        train_frame=split.train_frame, threshold=0.0, metrics={}, data_fingerprint=split.data_fingerprint,
        parity_max_abs_diff=0.0, reference_rows=200)
    write_bundle(store / "v3", bad, exported["sklearn"].model, None, load_or_create_signing_key(settings.signing_key))
    assert register_bundle(settings, "sklearn", store / "v1", exported["sklearn"].model) == 1
    assert register_bundle(settings, "torch", store / "v2", exported["torch"].model) == 2
    assert register_bundle(settings, "sklearn", store / "v3", exported["sklearn"].model) == 3
    assert register_bundle(settings, "sklearn", bundles.make(store / "v4", 4, "sklearn"), exported["sklearn"].model) == 4

    write_fleet_file(
        settings.fleet_path, [{"id": f"site-{i}", "port": free_port(), "labels": {"line": str(i)}} for i in range(6)],
        [{"name": "canary", "count": 1}, {"name": "half", "percent": 50}, {"name": "rest", "percent": 100}],
        # Two different good models (trees, MLP) differ in confidence and in how many rows
        # they flag; the bad one flags nearly all. Limits sit between the two.
        {"interval_seconds": 2, "measurements": 2, "min_requests_per_site": 20, "max_p99_latency_ratio": 5.0,
         "min_confidence_ratio": 0.7, "max_failure_rate_shift": 0.3,
         "inconclusive_limit": 4},
        bake_seconds=1, convergence_deadline_seconds=30, offline={"deadline_seconds": 5, "then": "skip"})
    fleet_file = load_fleet_file(settings.fleet_path)
    env = {"EDGEWAVE_SYNC_INTERVAL_SECONDS": "0.5", "EDGEWAVE_SAMPLE_FRACTION": "0"}
    local.up(settings, fleet_file.fleet, extra_env=env)
    traffic = Traffic(fleet_file.fleet.sites, ai4i_traffic(), rate_per_site=25).start()
    yield settings, fleet_file
    traffic.stop()
    local.down(settings, fleet_file.fleet)


def rollout(settings: Settings, version: int | None, *extra: str) -> tuple[int, dict, str]:
    """`edgewave rollout VERSION`, or with VERSION None `edgewave rollback EXTRA…`."""
    command = ["rollout", str(version)] if version is not None else ["rollback"]
    result = subprocess.run([str(BIN / "edgewave"), *command, *extra], capture_output=True, text=True,
                            timeout=600, env=edgewave_env(settings.home, EDGEWAVE_FLEET_PATH=str(settings.fleet_path)))
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"rollout_id"')]
    return result.returncode, json.loads(lines[-1]) if lines else {}, result.stdout + result.stderr


def versions(fleet_file) -> dict[str, int]:
    return {s.id: scrape(s.scrape_url).version for s in fleet_file.fleet.sites}


@pytest.fixture(scope="module")
def world(bundles, split, trained, exported, tmp_path_factory):
    yield from _world(bundles, split, trained, exported, tmp_path_factory.mktemp("rollout"))


def test_good_models_reach_every_site_wave_by_wave(world) -> None:
    settings, fleet_file = world
    repo = DesiredStateRepo.of(settings)

    code, result, log = rollout(settings, 1)
    assert (code, result.get("status")) == (0, "succeeded"), log
    assert set(versions(fleet_file).values()) == {1}
    # Not a terminal: progress comes as plain lines, one per wave's convergence and each decision.
    assert "progress: rollout v1: sites converged 1/1 (wave canary)" in log
    assert "progress: rollout v1: waves 3/3 (rest advanced)" in log
    assert len(repo.log(f"{result['rollout_id']}: wave")) == 3, "one commit per wave"
    record = repo.record(result["rollout_id"])
    assert [len(w["sites"]) for w in record["waves"]] == [1, 3, 2]
    committed = [w["committed_at"] for w in record["waves"]]
    assert committed == sorted(committed) and all(w["decided_at"] < n for w, n in zip(record["waves"], committed[1:])), \
        "each wave was decided before the next one was committed"
    assert registry.alias_version(settings, "production") == 1

    code, result, log = rollout(settings, 2)
    assert (code, result.get("status")) == (0, "succeeded"), log
    assert set(versions(fleet_file).values()) == {2}
    assert (registry.alias_version(settings, "production"), registry.alias_version(settings, "previous")) == (2, 1)
    described = registry.client(settings).get_model_version(settings.model_name, "2").description
    assert described == f"**Rollout**: rollout v2 → 6 sites: succeeded (`{result['rollout_id']}`)", described
    record = repo.record(result["rollout_id"])
    assert [w["decision"] for w in record["waves"]] == ["advance", "advance", "advance"]
    canary = record["waves"][0]["measurements"][0]
    assert canary["baseline_sites"], "canary judged against sites still on v1"
    assert canary["reason"].startswith("1 changed site(s) against 5 control(s)"), canary["reason"]
    assert [m["metric"] for m in canary["metrics"]] == ["latency", "confidence", "positive rate"]
    assert all(m["controls_before"] is not None for m in canary["metrics"]), "the fleet was watched before the canary"
    last = record["waves"][-1]["measurements"][0]
    assert sorted(last["baseline_sites"]) == sorted(record["waves"][0]["sites"] + record["waves"][1]["sites"]), \
        "in the last wave the controls are the sites upgraded earlier"


def on_v2_after_v1(settings: Settings) -> None:
    """v1 then v2 rolled out, unless an earlier test of the module left the fleet there."""
    if registry.alias_version(settings, "production") != 2:  # when run on its own
        for version in (1, 2):
            code, _, log = rollout(settings, version)
            assert code == 0, log


def test_a_bad_model_is_caught_at_the_canary_and_every_touched_site_returns(world) -> None:
    settings, fleet_file = world
    repo = DesiredStateRepo.of(settings)
    on_v2_after_v1(settings)

    commits_before = len(repo.log())
    code, result, log = rollout(settings, 3)
    assert (code, result.get("status")) == (1, "rolled_back"), log
    assert "positive rate: changed 0.0" in log and "fail (changed sites only)" in log, log
    described = registry.client(settings).get_model_version(settings.model_name, "3").description
    assert f"**Rollout**: rollout v3: rolled back at wave canary — positive rate (`{result['rollout_id']}`)" \
        in described, described
    assert set(versions(fleet_file).values()) == {2}, "every touched site back on v2"
    assert registry.alias_version(settings, "production") == 2
    subjects = repo.log(result["rollout_id"])
    assert sum(": wave " in s for s in subjects) == 1, "stopped at the canary"
    assert any("rollback after wave 1/3" in s for s in subjects)
    assert (settings.home / "rollouts" / f"{result['rollout_id']}.png").stat().st_size > 10_000, "timeline image"
    assert len(repo.log()) - commits_before == 3, "start (lease) + canary commit + one rollback commit"

    commits_before = len(repo.log())
    code, result, log = rollout(settings, 2)  # finished rollout, and v2 is in production: nothing to do
    assert (code, result.get("status")) == (0, "noop"), log
    assert len(repo.log()) == commits_before

    status = subprocess.run([str(BIN / "edgewave"), "status", "--json"], capture_output=True, text=True, timeout=120,
                            env=edgewave_env(settings.home, EDGEWAVE_FLEET_PATH=str(settings.fleet_path)))
    state = json.loads(status.stdout)
    assert state["registry"]["aliases"]["production"] == 2
    assert {s["site"]: (s["version"], s["desired"]) for s in state["fleet"]["sites"]} == \
        {f"site-{i}": (2, 2) for i in range(6)}
    assert state["fleet"]["last_rollout"]["status"] == "rolled_back"
    assert state["fleet"]["last_rollout"]["version"] == 3


def test_rollback_returns_every_site_in_waves_and_the_version_can_be_rolled_out_again(world) -> None:
    settings, fleet_file = world
    repo = DesiredStateRepo.of(settings)
    on_v2_after_v1(settings)
    assert registry.alias_version(settings, "previous") == 1

    code, result, log = rollout(settings, None, "--reason", "line 3 operators report false alarms")
    assert (code, result.get("kind"), result.get("version"), result.get("status")) == (0, "rollback", 1, "succeeded"), log
    assert set(versions(fleet_file).values()) == {1}, "every site back on v1"
    assert (registry.alias_version(settings, "production"), registry.alias_version(settings, "previous")) == (1, 2)
    repo.sync()
    record = repo.record(result["rollout_id"])
    assert record["kind"] == "rollback" and record["requested_reason"] == "line 3 operators report false alarms"
    assert [w["decision"] for w in record["waves"]] == ["advance", "advance", "advance"], "the same waves and analysis"
    assert sum(f"{result['rollout_id']}: rollback wave" in s for s in repo.log()) == 3, "marked as a rollback in Git"
    assert repo.read("site-0").rollback, "agents see a marked rollback (they refuse unmarked downgrades)"
    assert registry.client(settings).get_model_version(settings.model_name, "1").tags["rollout_kind"] == "rollback"

    code, result, log = rollout(settings, 2)
    assert (code, result.get("status")) == (0, "succeeded"), log
    assert set(versions(fleet_file).values()) == {2}, "a version that was rolled back can be rolled out again"
    assert registry.alias_version(settings, "production") == 2


def test_a_bad_policy_fails_before_anything_is_deployed(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    write_fleet_file(bad, {"s1": 19999}, [{"name": "canary", "percent": 5}, {"name": "rest", "percent": 100}],
               {"max_error_rate": -1}, rounding="down")
    result = subprocess.run([str(BIN / "edgewave"), "rollout", "1"], capture_output=True, text=True, timeout=120,
                            env=edgewave_env(tmp_path / "home", EDGEWAVE_FLEET_PATH=str(bad)))
    assert result.returncode == 2
    assert "rollout.analysis.max_error_rate" in result.stderr
    assert not (tmp_path / "home" / "desired-state").exists()


def test_a_person_approves_one_wave_at_its_manual_gate_and_rejects_the_next(world, tmp_path: Path) -> None:
    """Gates after the canary and after half the fleet: the first answer lets the rollout go on, the
    second rolls back every site it changed; both answers (`edgewave approve`/`reject`, the Prefect
    UI's Resume form through the same API) end up in the record and Git."""
    import yaml

    settings, fleet_file = world
    repo = DesiredStateRepo.of(settings)
    on_v2_after_v1(settings)
    policy = yaml.safe_load(settings.fleet_path.read_text())
    for wave in policy["rollout"]["waves"][:2]:
        wave["manual_gate"] = True
    gated = settings.model_copy(update={"fleet_path": tmp_path / "gated-fleet.yaml"})
    gated.fleet_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    env = edgewave_env(settings.home, EDGEWAVE_FLEET_PATH=str(gated.fleet_path))

    def answer(command: str, reason: str) -> bool:
        """`edgewave approve|reject --reason …`: True once a run waited at a gate and took the answer."""
        assert running.poll() is None, log.read_text()[-3000:]
        done = subprocess.run([str(BIN / "edgewave"), command, "--reason", reason], capture_output=True, text=True,
                              timeout=300, env=env)
        assert done.returncode in (0, 2), done.stdout + done.stderr
        assert done.returncode == 0 or "waits at a manual gate" in done.stdout + done.stderr, done.stdout + done.stderr
        return done.returncode == 0

    log = tmp_path / "rollout.log"
    with log.open("w") as out:
        running = subprocess.Popen([str(BIN / "edgewave"), "rollout", "4"], stdout=out, stderr=subprocess.STDOUT,
                                   text=True, env=env)
    try:
        wait_for(lambda: answer("approve", "canary on line 0 looks fine"), 300, "the gate after the canary")
        wait_for(lambda: answer("reject", "line 1 reports scrap it did not have"), 300, "the gate after half")
        running.wait(timeout=300)
    finally:
        if running.poll() is None:
            running.kill()
    text = log.read_text()
    assert running.returncode == 1, text
    result = json.loads([line for line in text.splitlines() if line.startswith('{"rollout_id"')][-1])
    assert result["status"] == "rolled_back", text
    repo.sync()
    record = repo.record(result["rollout_id"])
    first, second = record["waves"][:2]
    assert (first["approval"]["approved"], first["approval"]["reason"]) == (True, "canary on line 0 looks fine")
    assert (second["approval"]["approved"], second["decision"]) == (False, "rollback")
    assert second["reason"] == "rejected at the manual gate: line 1 reports scrap it did not have"
    assert record["waves"][2]["status"] == "pending", "the wave after a rejection is never committed"
    assert any("rollback after wave 2/3 (half): rejected at the manual gate: line 1 reports scrap" in s
               for s in repo.log(result["rollout_id"]))
    assert set(versions(fleet_file).values()) == {2}, "every site the rollout changed is back on v2"
    assert registry.alias_version(settings, "production") == 2
    held = [s for s in repo.log(result["rollout_id"]) if "(waiting for approval after wave" in s]
    assert len(held) == 2, repo.log(result["rollout_id"])
    until = datetime.strptime(held[0].split("lease until ")[1][:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert until - datetime.fromisoformat(record["started_at"]) > timedelta(hours=23), \
        "the lease covered the person's time to answer"
    assert sum("(the manual gate answered)" in s for s in repo.log(result["rollout_id"])) == 2


def test_a_copied_home_rolls_back_on_its_own_and_leaves_the_original_alone(world, tmp_path: Path) -> None:
    """A home copied after a rollout (a backup restored elsewhere) rolls the fleet back from the copy:
    MLflow, the desired-state remote and the bundles it uses are the copy's; the original's database,
    remote and artifacts are byte for byte as they were."""
    import hashlib

    import yaml

    settings, _ = world
    on_v2_after_v1(settings)
    original = settings.home

    def fingerprint() -> dict:
        files = sorted(p for folder in ("mlartifacts", "bundles") for p in (original / folder).rglob("*") if p.is_file())
        heads = subprocess.run(["git", "-C", str(original / "desired-state.git"), "show-ref"], capture_output=True,
                               text=True, check=True).stdout
        return {"mlflow.db": hashlib.sha256((original / "mlflow.db").read_bytes()).hexdigest(), "remote": heads,
                "files": [(str(p.relative_to(original)), p.stat().st_size) for p in files]}

    def copy_what_stays(source: str, target: str) -> None:  # a running site's sample files come and go
        with suppress(FileNotFoundError):
            shutil.copy2(source, target)

    before = fingerprint()
    copy = tmp_path / "restored" / "home"
    shutil.copytree(original, copy, copy_function=copy_what_stays)
    fleet = yaml.safe_load(settings.fleet_path.read_text())
    for site in fleet["fleet"]["sites"]:
        site["port"] = free_port()  # the copy's own sites, beside the original's
    copied = Settings(home=copy, fleet_path=tmp_path / "restored" / "fleet.yaml")
    copied.fleet_path.write_text(yaml.safe_dump(fleet, sort_keys=False))
    env = edgewave_env(copy, EDGEWAVE_FLEET_PATH=str(copied.fleet_path))

    shown = subprocess.run([str(BIN / "edgewave"), "status"], capture_output=True, text=True, timeout=300, env=env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"this home was at {original}, now {copy}" in shown.stderr, shown.stderr
    assert f"writes to: home {copy}, mlflow sqlite:///{copy}/mlflow.db, desired state {copy}/desired-state.git" \
        in shown.stdout, shown.stdout

    fleet_file = load_fleet_file(copied.fleet_path)
    local.up(copied, fleet_file.fleet, extra_env={"EDGEWAVE_SYNC_INTERVAL_SECONDS": "0.5", "EDGEWAVE_SAMPLE_FRACTION": "0"})
    try:
        with Traffic(fleet_file.fleet.sites, ai4i_traffic(), rate_per_site=25):
            result = subprocess.run([str(BIN / "edgewave"), "rollback", "--reason", "restored backup"],
                                    capture_output=True, text=True, timeout=600, env=env)
            assert result.returncode == 0, result.stdout + result.stderr
            assert set(versions(fleet_file).values()) == {1}, "the copy's sites are back on v1"
    finally:
        local.down(copied, fleet_file.fleet)
    assert registry.alias_version(copied, "production") == 1
    assert registry.rollout_target(copied, 1)[0].startswith(copy.as_uri()), "the copy's own bundle store"
    assert fingerprint() == before, "nothing of the original changed"
    assert registry.alias_version(settings, "production") == 2
