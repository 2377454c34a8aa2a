"""Benchmark: each stage of the release flow and the whole flow, under Prefect and called directly.

Both run the flow's one step sequence (the body of `release` in flows/release.py): as the Prefect
flow, and with its tasks' plain functions put in their place. They run in this one process, interleaved, on the same
data seed, each against its own embedded state (SQLite MLflow, local bundle store). Without a
Docker engine the image step writes the build context and skips the build on both sides. The output is Prefect's overhead as a
ratio (prefect / direct) per stage and for the whole flow; the ephemeral API server's
start-up is reported on its own since a deployed flow does not pay it.

    .venv/bin/python -m bench.release [--rounds 3] [--rows 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from bench.common import prefect_api_startup_seconds

RESULTS = Path(__file__).parent / "results" / "release.json"


class _Plain:
    """A release task's plain function (its `.fn`), timed under the task's name. It accepts
    `with_options` (what `retried` calls) and stays a plain call: no task run, no retries."""

    def __init__(self, name: str, fn, times: dict[str, float]) -> None:
        self.name, self.fn, self.times = name, fn, times

    def with_options(self, **_options) -> _Plain:
        return self

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.times[self.name] += time.perf_counter() - start


@contextmanager
def plain_steps(times: dict[str, float]) -> Iterator[None]:
    """Inside this block the release flow's module of tasks holds their plain functions instead:
    the flow's body (`release.fn`), which looks its steps up in that module at each call, then
    runs the same sequence without Prefect."""
    from prefect import Task

    from edgewave.tasks.release import steps

    originals = {name: value for name, value in vars(steps).items() if isinstance(value, Task)}
    try:
        for name, value in originals.items():
            setattr(steps, name, _Plain(value.name, value.fn, times))
        yield
    finally:
        for name, value in originals.items():
            setattr(steps, name, value)


def direct_release(settings) -> dict[str, float]:
    """The release flow's own body (`release.fn`) with its tasks' plain functions."""
    from edgewave.flows.release import release
    from edgewave.tasks.platform.settings import use

    times: dict[str, float] = defaultdict(float)
    with plain_steps(times), use(settings):
        release.fn()
    return dict(times)


def prefect_stage_times(flow_run_id) -> dict[str, float]:
    """Wall time of each task run as its client saw it: from its Pending to its final state.

    State timestamps are taken by the engine in this process, so they include the
    orchestration calls around the task's function (the server's `created` is not: runs are
    recorded asynchronously).
    """
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> dict[str, float]:
        times: dict[str, float] = defaultdict(float)
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            for run in runs:
                states = sorted(await client.read_task_run_states(run.id), key=lambda s: s.timestamp)
                if states and states[-1].is_final():
                    times[run.name.rsplit("-", 1)[0]] += (states[-1].timestamp - states[0].timestamp).total_seconds()
        return times

    return dict(asyncio.run(read()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="edgewave-bench-"))
    from edgewave.tasks.platform.settings import Settings, use

    base = Settings(home=root / "prefect-home", train_rows=args.rows)
    base.apply_runtime_environment()  # before prefect/mlflow are imported
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    direct_settings = Settings(home=root / "direct-home", train_rows=args.rows)


    from edgewave.flows.release import release

    startup = prefect_api_startup_seconds()
    print(f"prefect ephemeral API start-up: {startup:.1f}s")

    # One uncounted round of each warms imports, MLflow's schema set-up and torch's kernels.
    direct_release(direct_settings.model_copy(update={"data_seed": 999}))
    with use(base.model_copy(update={"data_seed": 999})):
        release()

    whole = {"direct": [], "prefect": []}
    stages = {"direct": defaultdict(list), "prefect": defaultdict(list)}
    for round_ in range(args.rounds):
        seed = 1000 + round_
        start = time.perf_counter()
        times = direct_release(direct_settings.model_copy(update={"data_seed": seed}))
        whole["direct"].append(time.perf_counter() - start)
        for name, value in times.items():
            stages["direct"][name].append(value)

        start = time.perf_counter()
        with use(base.model_copy(update={"data_seed": seed})):
            state = release(return_state=True)
        whole["prefect"].append(time.perf_counter() - start)
        for name, value in prefect_stage_times(state.state_details.flow_run_id).items():
            stages["prefect"][name].append(value)
        print(f"round {round_ + 1}: direct {whole['direct'][-1]:.2f}s, prefect {whole['prefect'][-1]:.2f}s")

    def row(direct: list[float], prefect: list[float]) -> dict[str, float]:
        d, p = statistics.median(direct), statistics.median(prefect)
        return {"direct_s": round(d, 4), "prefect_s": round(p, 4), "ratio": round(p / d, 3) if d > 0 else None}

    result = {
        "benchmark": "release flow: Prefect vs the same functions called directly",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rounds": args.rounds,
        "train_rows": args.rows,
        "statistic": "median over rounds, after one uncounted warm-up round of each",
        "notes": "Both sides run the same steps, artifacts included (the direct side stores them through the same "
                 "API without a flow run). build-serving-image: without a Docker engine it writes the build context "
                 "and skips the build on both sides.",
        "prefect_ephemeral_startup_s": round(startup, 2),
        "whole_flow": row(whole["direct"], whole["prefect"]),
        "stages": {name: row(stages["direct"][name], stages["prefect"].get(name, [float("nan")]))
                   for name in stages["direct"]},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'stage':<22}{'direct s':>10}{'prefect s':>11}{'ratio':>8}")
    for name, r in [*result["stages"].items(), ("WHOLE FLOW", result["whole_flow"])]:
        print(f"{name:<22}{r['direct_s']:>10.3f}{r['prefect_s']:>11.3f}{r['ratio']:>8}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
