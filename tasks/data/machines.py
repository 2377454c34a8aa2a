"""The simulated machines a dataset spec can name (`generator:`), for demos, tests and benches.

A machine makes rows of its spec's shape (raw columns + target, labels following its failure
physics), knows its drift scenarios by name, and says which two the demo applies after the
first rollout. A plant with its own data needs none of this: the release reads its file and the
traffic replayer samples the bundle's reference instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from edgewave.tasks.data import ai4i, pump
from edgewave.tasks.data.ai4i import DriftScenario, build_scenario
from edgewave.tasks.data.spec import DatasetSpec

Generator = Callable[..., pd.DataFrame]  # (rows, seed, scenario=None) -> raw columns + target


@dataclass(frozen=True)
class Machine:
    name: str
    generate: Generator
    scenarios: Mapping[str, Callable[..., DriftScenario]]
    demo_drift: tuple[tuple[str, dict[str, float | str]], ...]

    def scenario(self, name: str, **params: float | str) -> DriftScenario:
        return build_scenario(self.scenarios, name, params, self.name)


MACHINES: dict[str, Machine] = {
    "ai4i": Machine("ai4i", ai4i.generate, ai4i.SCENARIOS,
                    # 10 K, not 5: the first check after the change also holds the rows served before it
                    # (~40 % of them), and at 5 K the site's score fell under its threshold (1.5) from a
                    # 30 % share of such rows on, so `make run` needed a second check one run in two.
                    # At 10 K: 2.6 at a 40 % share, 1.7 at 60 % (the lowest of 20 draws each).
                    (("sensor_calibration_offset", {"feature": "process_temperature_k", "offset": 10.0}),
                     ("worn_tool_regime", {"life_factor": 1.6}))),
    "pump": Machine("pump", pump.generate_pump, pump.SCENARIOS,
                    (("sensor_calibration_offset", {"feature": "bearing_temperature_c", "offset": 8.0}),
                     ("bearing_wear", {"rate": 2.0}))),
}


def machine_of(spec: DatasetSpec) -> Machine:
    """The spec's simulated machine; a spec without one is a plant's own data set."""
    if spec.generator is None:
        raise ValueError(f"the dataset {spec.name!r} names no simulated machine (generator:); give it your data "
                         "file with EDGEWAVE_DATA_PATH")
    return MACHINES[spec.generator]


def simulate(spec: DatasetSpec, rows: int, seed: int, scenario: DriftScenario | None = None) -> pd.DataFrame:
    """`rows` rows of the spec's simulated machine: its raw columns and target, checked against the spec."""
    frame = machine_of(spec).generate(rows, seed, scenario)
    missing = [c for c in (*spec.features, spec.target.name) if c not in frame.columns]
    if missing:
        raise ValueError(f"the dataset {spec.name!r} declares {missing}, which the {spec.generator!r} machine does "
                         f"not make (it makes {list(frame.columns)})")
    return frame
