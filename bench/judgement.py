"""Benchmark: does the canary judgement tell a bad model from a busy plant?

Repeated real rollouts over six local sites (real processes serving ONNX over HTTP, Git desired
state, the MLflow registry, `edgewave rollout` through Prefect) of a good model (two retrains of
the same pipeline on fresh data, one replacing the other) and of two bad ones: one trained on
shuffled labels, and a subtler one, a good model with its threshold lowered so that it flags
0.15 more of the rows. Half the tries put a load on the machine during the rollout: two processes spinning on
both cores for part of a wave.

Both rules judge the same windows of the same rollouts: the rollout is driven by the new rule
(the wave's changed sites against concurrent controls, tasks/rollout/controls.py) and every
measurement records what today's rule (each changed site against its own past, with the same
thresholds) said of it (`own_history`); today's shipped policy differed in one threshold (a
positive-rate shift of 0.3, not 0.1), re-applied to the same per-site numbers (`todays_policy`).
Today's rule "rolls back" a try when any of its measurements failed; a bad model is "caught" the
same way. One caveat, in its favour: it is only asked about the waves the new rule let happen.

    .venv/bin/python -m bench.judgement [--good-tries 10] [--bad-tries 2] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

from bench.common import write_results
from tests.helpers import BIN, ai4i_traffic, edgewave_env, free_port, register_bundle, write_fleet_file

RESULTS = Path(__file__).parent / "results" / "judgement.json"
ROOT = Path(__file__).resolve().parents[1]
SUBTLE_SHIFT = 0.15
RULES = {
    "todays_policy": "today's rule as shipped: each changed site against its own past, positive-rate limit 0.3",
    "own_history": "today's rule at the new policy's thresholds (positive-rate limit 0.1)",
    "controls": "the new rule: changed sites against concurrent controls, difference in differences",
}


def shipped_analysis() -> dict:
    """The shipped policy's analysis, with the bench's shorter clock (the thresholds are the shipped ones)."""
    analysis = yaml.safe_load((ROOT / "deployments" / "fleet.yaml").read_text())["rollout"]["analysis"]
    return {**analysis, "interval_seconds": 2, "measurements": 2, "min_requests_per_site": 30}


def build(work: Path) -> tuple[object, object, Callable[[str], int], dict]:
    """Four models exported (two good, two bad); six local sites in a fleet file. Returns (settings,
    fleet file, `release`: model name → a newly registered version of it, what the bad models are).
    Each try rolls out a version of its own: a site applies an older version only in a rollback."""
    from edgewave.tasks.data.ai4i import generate
    from edgewave.tasks.data.spec import load_spec
    from edgewave.tasks.platform.fleetfile import load_fleet_file
    from edgewave.tasks.platform.settings import Settings
    from edgewave.tasks.release.bundle import build_manifest, load_or_create_signing_key, write_bundle
    from edgewave.tasks.release.export import export_model
    from edgewave.tasks.release.features import Features
    from edgewave.tasks.release.train import split_data, train_sklearn

    spec = load_spec(ROOT / "deployments" / "dataset.yaml")
    settings = Settings(home=work / "home", fleet_path=work / "fleet.yaml")
    settings.apply_runtime_environment()
    key = load_or_create_signing_key(settings.signing_key)
    splits = {seed: split_data(generate(6000, seed), seed=0, features=Features.of(spec)) for seed in (21, 22)}
    rng = np.random.default_rng(0)
    split = splits[21]
    shuffled = replace(split, y_train=rng.permutation(split.y_train), y_val=rng.permutation(split.y_val))
    print("training two good models (a retrain on fresh data) and one on shuffled labels", flush=True)
    trained = {"good-a": (train_sklearn(split), split), "good-b": (train_sklearn(splits[22]), splits[22]),
               "bad-shuffled": (train_sklearn(shuffled), shuffled)}
    # the subtle one: the good model, flagging SUBTLE_SHIFT more of the rows
    good = trained["good-a"][0]
    p = good.predict_proba(split.x_test)  # held-out rows of the generator the traffic comes from
    base = float(np.mean(p >= good.metrics.threshold))
    subtle_threshold = float(np.quantile(p, 1 - base - SUBTLE_SHIFT))
    models = {name: (t, s, export_model(t, s.x_test, s.y_test, features=s.features), t.metrics.threshold)
              for name, (t, s) in trained.items()}
    models["bad-subtle"] = (*models["good-a"][:3], subtle_threshold)
    store = settings.home / "bundles" / settings.model_name
    released = [0]

    def release(name: str) -> int:
        t, s, exported, threshold = models[name]
        released[0] += 1
        manifest = build_manifest(
            name=settings.model_name, version=released[0], family=t.family, model=exported.model, int8_model=None,
            train_frame=s.train_frame, threshold=threshold, metrics=t.metrics.as_dict(),
            data_fingerprint=s.data_fingerprint, parity_max_abs_diff=exported.parity_max_abs_diff,
            reference_rows=500, physical=spec.physical_ranges())
        bundle = write_bundle(store / f"v{released[0]}", manifest, exported.model, None, key)
        version = register_bundle(settings, t.family, bundle, exported.model)
        assert version == released[0], (version, released[0])
        return version

    sites = [{"id": f"site-{i}", "port": free_port(), "labels": {"line": str(i)}} for i in range(6)]
    write_fleet_file(settings.fleet_path, sites,
                     [{"name": "canary", "count": 1}, {"name": "half", "percent": 50}, {"name": "rest", "percent": 100}],
                     shipped_analysis(), bake_seconds=1, convergence_deadline_seconds=60,
                     offline={"deadline_seconds": 10, "then": "skip"})
    return settings, load_fleet_file(settings.fleet_path), release, {
        "bad-shuffled": "scikit-learn trained on shuffled labels",
        "bad-subtle": f"good-a with threshold {subtle_threshold:.4f} instead of {good.metrics.threshold:.4f}: it flags "
                      f"{SUBTLE_SHIFT} more of the held-out rows"}


class Load:
    """Two processes spinning on both cores from `start` seconds for `seconds`, stopped by pid."""

    def __init__(self, start: float, seconds: float) -> None:
        self.start, self.seconds = start, seconds
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.stop = threading.Event()

    def _run(self) -> None:
        if self.stop.wait(self.start):
            return
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
        try:
            self.stop.wait(self.seconds)
        finally:
            for p in spinners:
                p.kill()
                p.wait()

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def rollout(settings, api: str, version: int) -> tuple[dict, float]:
    """`edgewave rollout VERSION`; the rollout record and the seconds it took."""
    from edgewave.tasks.rollout.gitops import DesiredStateRepo

    start = time.monotonic()
    result = subprocess.run([str(BIN / "edgewave"), "rollout", str(version)], capture_output=True, text=True,
                            timeout=900, env=edgewave_env(settings.home, EDGEWAVE_FLEET_PATH=str(settings.fleet_path),
                                                          PREFECT_API_URL=api))
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"rollout_id"')]
    if not lines:
        raise RuntimeError(f"rollout of v{version} gave no result (exit {result.returncode}):\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    record = DesiredStateRepo.of(settings).record(json.loads(lines[-1])["rollout_id"])
    return record, time.monotonic() - start


TODAYS_MAX_SHIFT = 0.3  # deployments/fleet.yaml's max_failure_rate_shift before the judgement against controls


def own_history_outcome(record: dict, max_shift: float | None = None) -> tuple[str, str]:
    """What today's rule would have done on the measured windows: rolled back at its first failed
    measurement, held after too many inconclusive ones in a wave, else advanced. `max_shift`: judge
    the positive-rate shift at that limit instead of the policy's (today's shipped policy had 0.3)."""
    limit = record["policy"]["analysis"]["inconclusive_limit"]
    for wave in record["waves"]:
        inconclusive = 0
        for m in wave["measurements"]:
            said = m.get("own_history", {})
            verdict = said.get("verdict")
            if max_shift is not None and verdict == "fail" and "sites" in said:
                failed = [s for s in said["sites"] if s["verdict"] == "fail" and (
                    any(r.startswith(("error rate", "p99 ratio", "confidence ratio")) for r in s["reasons"])
                    or (s["failure_rate_shift"] or 0) > max_shift)]
                verdict = "fail" if failed or "not the wave's" in said.get("reason", "") else "pass"
            if verdict == "fail":
                return "rolled_back", f"wave {wave['name']}: {said.get('reason', '')[:300]}"
            inconclusive += verdict == "inconclusive"
            if inconclusive >= limit:
                return "held", f"wave {wave['name']}: {said.get('reason', '')[:300]}"
    return "succeeded", ""


def tally(tries: list[dict]) -> dict:
    """Per rule, model and load: tries, rollbacks, holds, successes."""
    table: dict = {}
    for rule in RULES:
        for t in tries:
            key = f"{t['model']}, {'load' if t['load'] else 'quiet'}"
            row = table.setdefault(rule, {}).setdefault(key, {"tries": 0, "rolled_back": 0, "held": 0, "succeeded": 0})
            row["tries"] += 1
            row[t[rule]["outcome"]] += 1
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--good-tries", type=int, default=10, help="good-model rollouts under load (and half as many quiet)")
    parser.add_argument("--bad-tries", type=int, default=2, help="rollouts of each bad model, quiet and under load")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--note", default="", help="what else ran on the machine meanwhile, for the results")
    args = parser.parse_args()

    from edgewave.tasks.fleet import local, servers
    from edgewave.tasks.platform.settings import Settings
    from edgewave.tasks.rollout.record import RolloutRecord, judgement
    from edgewave.tasks.sim.traffic import Traffic

    work = Path(tempfile.mkdtemp(prefix="edgewave-bench-judgement-"))
    rng = random.Random(args.seed)
    settings, fleet_file, release, bad_models = build(work)
    server_settings = Settings(home=work / "prefect-server")
    env = {k: v for k, v in servers.server_env(server_settings, "", "").items()
           if k not in ("PREFECT_API_URL", "EDGEWAVE_TRACKING_URI")}
    api = servers.start_prefect(server_settings, free_port(), env, scheduler=False, log=lambda _l: None, timeout=180)
    local.up(settings, fleet_file.fleet, extra_env={"EDGEWAVE_SYNC_INTERVAL_SECONDS": "0.5",
                                                     "EDGEWAVE_SAMPLE_FRACTION": "0"})
    traffic = Traffic(fleet_file.fleet.sites, ai4i_traffic(), rate_per_site=25).start()
    plan = ([("good", True)] * args.good_tries + [("good", False)] * max(1, args.good_tries // 2)
            + [(bad, load) for bad in bad_models for load in (False, True) for _ in range(args.bad_tries)])
    rng.shuffle(plan)
    tries: list[dict] = []
    started = time.monotonic()
    try:
        record, _ = rollout(settings, api, release("good-a"))  # the fleet's first model
        production = "good-a"
        for n, (kind, loaded) in enumerate(plan, start=1):
            model = ("good-b" if production == "good-a" else "good-a") if kind == "good" else kind
            # a wave takes ~8 s here (commit, convergence, bake, two 2 s measurements): load lands in one
            load = (rng.uniform(6.0, 20.0), rng.uniform(5.0, 9.0)) if loaded else None
            if load:
                with Load(*load):
                    record, seconds = rollout(settings, api, release(model))
            else:
                record, seconds = rollout(settings, api, release(model))
            own, why_own = own_history_outcome(record)
            today, why_today = own_history_outcome(record, TODAYS_MAX_SHIFT)
            new = {"succeeded": "succeeded", "rolled_back": "rolled_back"}.get(record["status"], "held")
            tries.append({"try": n, "model": model if kind == "good" else kind, "load": loaded,
                          "load_window_seconds": [round(v, 1) for v in load] if load else None,
                          "seconds": round(seconds, 1),
                          "controls": {"outcome": new, "reason": (record.get("reason") or "")[:400]},
                          "own_history": {"outcome": own, "reason": why_own},
                          "todays_policy": {"outcome": today, "reason": why_today},
                          "judgement": judgement(RolloutRecord.model_validate(record))})
            print(f"try {n}/{len(plan)}: {model} {'under load' if loaded else 'quiet'}: new rule {new}, "
                  f"today's rule {today} (at the new thresholds {own}) ({seconds:.0f} s)", flush=True)
            if record["status"] == "succeeded":
                production = model
            if production.startswith("bad"):  # a missed bad model: back to a good one, not counted
                rollout(settings, api, release("good-a"))
                production = "good-a"
    finally:
        traffic.stop()
        local.down(settings, fleet_file.fleet)
        servers.down(server_settings)
    table = tally(tries)

    def count(rule: str, model_prefix: str, load: bool | None, outcome: str) -> tuple[int, int]:
        rows = [t for t in tries if t["model"].startswith(model_prefix) and (load is None or t["load"] == load)]
        return sum(t[rule]["outcome"] == outcome for t in rows), len(rows)

    def rate(pair: tuple[int, int]) -> float | None:
        return round(pair[0] / pair[1], 3) if pair[1] else None

    summary = {rule: {
        "wrong_rollbacks_good_under_load": rate(count(rule, "good", True, "rolled_back")),
        "wrong_rollbacks_good_quiet": rate(count(rule, "good", False, "rolled_back")),
        "missed_bad": rate((sum(t[rule]["outcome"] != "rolled_back" for t in tries if t["model"].startswith("bad")),
                            sum(t["model"].startswith("bad") for t in tries))),
    } for rule in RULES}
    good_load = count("controls", "good", True, "rolled_back")
    results = {
        "benchmark": "canary judgement: today's rule (own history) vs concurrent controls, same rollouts",
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": f"{platform.machine()}, "
        f"{__import__('os').cpu_count()} cores", "seconds": round(time.monotonic() - started),
        "note": args.note, "policy": shipped_analysis(), "rules": RULES, "bad_models": bad_models,
        "summary": summary, "by_model_and_load": table, "tries": tries,
        "targets": {
            f"0 wrong rollbacks of the good model under load in >= 10 tries (new rule: {good_load[0]} of {good_load[1]})":
                good_load[0] == 0 and good_load[1] >= 10,
            "every bad model caught (new rule)": summary["controls"]["missed_bad"] == 0,
        },
    }
    print(json.dumps({"summary": summary, "by_model_and_load": table}, indent=2))
    write_results(RESULTS, results)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
