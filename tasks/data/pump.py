"""A centrifugal pump, the second kind of machine: other sensors, other failure physics.

Each row is one hour of a pump's operation: flow and discharge pressure follow the pump curve
(pressure falls with flow squared), the motor's current follows the power the pump takes,
which grows as its efficiency falls with impeller and bearing wear; vibration and bearing
temperature grow with bearing wear and load. A hidden wear state per pump drives three
failure modes within the next hours, so the label follows the physics:

- bearing failure: a worn bearing, seen in vibration and bearing temperature together;
- motor overload: the motor draws far more current than the water's power explains (efficiency
  lost to wear), which the derived `power_ratio` exposes;
- cavitation: flow far beyond the best efficiency point at low discharge pressure.

Drift scenarios change the world (bearings wearing faster, a plant pushing more flow) or its
measurement (a sensor reading off), as for the milling machine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from edgewave.tasks.data.ai4i import DriftScenario, configured, sensor_calibration_offset

FEATURES: tuple[str, ...] = ("flow_m3h", "discharge_pressure_bar", "motor_current_a", "vibration_mm_s",
                             "bearing_temperature_c", "impeller")
TARGET = "pump_failure"
IMPELLERS = ("standard", "high_flow")


@dataclass(frozen=True)
class PumpConfig:
    impeller_mix: tuple[float, float] = (0.7, 0.3)
    flow_mean_m3h: float = 110.0
    flow_sd_m3h: float = 18.0
    shutoff_pressure_bar: tuple[float, float] = (9.0, 7.5)  # per impeller
    curve_bar_per_flow2: tuple[float, float] = (3.6e-4, 2.0e-4)
    best_efficiency: tuple[float, float] = (0.78, 0.74)
    volts: float = 400.0
    wear_rate: float = 1.0  # how fast bearings wear (1 = nominal)
    ambient_c: float = 25.0


def generate_pump(n: int, seed: int, scenario: DriftScenario | None = None,
                  config: PumpConfig | None = None) -> pd.DataFrame:
    """`n` hours of a fleet of pumps, reproducible for a seed; features, failure modes and target."""
    cfg = configured("generate_pump", n, config or PumpConfig(), scenario)
    rng = np.random.default_rng(seed)
    impeller = rng.choice(2, size=n, p=np.asarray(cfg.impeller_mix))
    wear = np.clip(rng.gamma(2.0, 0.18 * cfg.wear_rate, n), 0, 3)  # hidden: 0 new, >1 worn
    flow = np.clip(rng.normal(cfg.flow_mean_m3h, cfg.flow_sd_m3h, n) * np.where(impeller == 1, 1.25, 1.0), 5, 260)
    shutoff = np.asarray(cfg.shutoff_pressure_bar)[impeller]
    pressure = np.clip(shutoff - np.asarray(cfg.curve_bar_per_flow2)[impeller] * flow**2
                       + rng.normal(0, 0.15, n), 0.2, None)
    hydraulic_kw = flow * pressure / 36.0
    efficiency = np.asarray(cfg.best_efficiency)[impeller] * (1 - 0.22 * np.clip(wear - 0.3, 0, None))
    efficiency = np.clip(efficiency - 0.15 * np.abs(flow / 130 - 1) ** 2, 0.2, 0.9)
    motor_kw = hydraulic_kw / efficiency
    current = np.clip(motor_kw * 1000 / (np.sqrt(3) * cfg.volts * 0.86) + rng.normal(0, 0.8, n), 0.5, None)
    vibration = 1.2 + 2.6 * wear**1.5 + 0.015 * np.abs(flow - 120) + rng.gamma(2.0, 0.15, n)
    temperature = cfg.ambient_c + 18 + 0.35 * motor_kw + 14 * wear**1.3 + rng.normal(0, 1.5, n)

    tolerance = rng.normal(1.0, 0.06, n)  # pumps differ: the same reading fails one and not another
    bearing = ((vibration > 4.6 * tolerance) & (temperature > 64 * tolerance)) | (wear > 2.1 * tolerance)
    overload = motor_kw / np.maximum(hydraulic_kw, 0.1) > 1.62 * tolerance
    cavitation = (flow > 185 * tolerance) & (pressure < 2.0)
    random = rng.random(n) < 0.002
    frame = pd.DataFrame({
        "flow_m3h": np.round(flow, 1), "discharge_pressure_bar": np.round(pressure, 2),
        "motor_current_a": np.round(current, 1), "vibration_mm_s": np.round(vibration, 2),
        "bearing_temperature_c": np.round(temperature, 1), "impeller": impeller.astype(np.float64),
        "bearing": bearing, "overload": overload, "cavitation": cavitation, "random": random,
    })
    frame[TARGET] = frame[["bearing", "overload", "cavitation", "random"]].any(axis=1).astype(np.int64)
    if scenario is not None:
        frame = scenario.apply(frame)
    return frame


def bearing_wear(rate: float = 1.8) -> DriftScenario:
    """Bearings wear faster (a lubrication problem): vibration and temperature climb, failures too."""
    return DriftScenario("bearing_wear", f"bearings wear x{rate:g}", process=lambda c: replace(c, wear_rate=rate),
                         params={"rate": rate})


def flow_push(mean_m3h: float = 150.0) -> DriftScenario:
    """The plant pushes more flow through its pumps: further from the best efficiency point."""
    return DriftScenario("flow_push", f"mean flow {mean_m3h:g} m3/h",
                         process=lambda c: replace(c, flow_mean_m3h=mean_m3h), params={"mean_m3h": mean_m3h})


def sensor_offset(feature: str = "bearing_temperature_c", offset: float = 8.0) -> DriftScenario:
    return sensor_calibration_offset(feature, offset, FEATURES)


SCENARIOS = {"bearing_wear": bearing_wear, "flow_push": flow_push, "sensor_calibration_offset": sensor_offset}
