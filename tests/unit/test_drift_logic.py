"""Drift verdicts from plain data: column results, the fleet summary, cooldown, feedback."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from edgewave.tasks.data.ai4i import FEATURES, TARGET, generate
from edgewave.tasks.drift.checks import ColumnDrift, SiteCheck, column_results, summarise, thresholds
from edgewave.tasks.drift.steps import event_payload, in_cooldown
from edgewave.tasks.platform.fleetfile import DriftPolicy
from edgewave.tasks.platform.monitoring import EVENTS, MonitoringStore, SiteLedger, WindowCheck
from edgewave.tasks.release.steps import add_feedback

POLICY = DriftPolicy(min_sites=2, consecutive_windows=2)


def checked(site: str, drifted: list[str], confirmed: bool) -> SiteCheck:
    columns = [ColumnDrift(column=c, method="wasserstein", score=0.5 if c in drifted else 0.01, threshold=0.2,
                           drifted=c in drifted) for c in FEATURES]
    return SiteCheck(site=site, check_id="c1", status="checked", drifted=bool(drifted), columns=columns,
                     drifted_share=len(drifted) / len(FEATURES), confirmed=confirmed, model_version=3,
                     report=f"file:///store/_drift/reports/c1/{site}.html")


def test_p_value_and_distance_methods_are_read_the_right_way_round() -> None:
    snapshot = {"metrics": [
        {"config": {"type": "evidently:metric_v2:ValueDrift", "column": "a", "method": "K-S p_value", "threshold": 0.05},
         "value": 0.01},
        {"config": {"type": "evidently:metric_v2:ValueDrift", "column": "b", "method": "wasserstein", "threshold": 0.2},
         "value": 0.1},
        {"config": {"type": "evidently:metric_v2:DriftedColumnsCount"}, "value": {"count": 1}},
    ]}
    results = column_results(snapshot)
    assert results["a"].drifted and not results["b"].drifted and set(results) == {"a", "b"}
    assert results["a"].severity > 1 > results["b"].severity


def test_the_fleet_needs_min_sites_confirmed_and_ranks_features_by_sites() -> None:
    checks = [checked("s1", ["tool_wear_min"], True), checked("s2", ["tool_wear_min", "torque_nm"], False),
              checked("s3", [], False), SiteCheck(site="s4", check_id="c1", status="waiting")]
    one = summarise("c1", "m", checks, POLICY)
    assert not one.detected and one.sites_drifted == ["s1", "s2"] and one.sites_waiting == ["s4"]
    assert one.top_features[0] == ("tool_wear_min", 2)
    checks[1] = checked("s2", ["tool_wear_min", "torque_nm"], True)
    two = summarise("c1", "m", checks, POLICY)
    assert two.detected and two.sites_confirmed == ["s1", "s2"]
    payload = event_payload(two, {"s1": "mlflow://run/reports/s1.html"})
    assert payload["sites"] == ["s1", "s2"] and sorted(payload["features"]["s2"]) == ["tool_wear_min", "torque_nm"]
    assert payload["reports"] == {"s1": "mlflow://run/reports/s1.html", "s2": "file:///store/_drift/reports/c1/s2.html"}
    json.dumps(payload)  # it travels as a Prefect event payload


def test_consecutive_windows_restart_on_a_clean_window_or_a_new_model() -> None:
    ledger = SiteLedger(history=[WindowCheck(check_id=str(i), model_version=v, rows=500, drifted=d)
                                 for i, (v, d) in enumerate([(1, True), (1, False), (1, True), (2, True), (2, True)])])
    assert ledger.consecutive_drifted(2) == 2 and ledger.consecutive_drifted(1) == 0


def test_thresholds_refuse_a_column_the_model_does_not_have() -> None:
    policy = DriftPolicy(column_thresholds={"torque_nm": 0.5})
    assert thresholds(policy, FEATURES)["torque_nm"] == 0.5 and thresholds(policy, FEATURES)["probability"] == 0.2
    with pytest.raises(ValueError, match="spindle"):
        thresholds(DriftPolicy(column_thresholds={"spindle": 0.5}), FEATURES)


def test_cooldown_counts_from_the_last_event_of_the_model(tmp_path) -> None:
    store = MonitoringStore(tmp_path.as_uri())
    store.write_json({"m": {"at": 1000.0}}, *EVENTS)
    assert in_cooldown(store, "m", 30, now=1000.0 + 29 * 60) == pytest.approx(29 * 60)
    assert in_cooldown(store, "m", 30, now=1000.0 + 31 * 60) is None
    assert in_cooldown(store, "other", 30, now=1001.0) is None


def test_feedback_rows_join_the_training_data_or_are_refused_by_column() -> None:
    base = generate(300, 1)
    feedback = generate(50, 2)[[*FEATURES, TARGET]]
    joined = add_feedback(base, feedback)
    assert len(joined) == 350 and list(joined.columns) == [*FEATURES, TARGET]
    assert add_feedback(base, pd.DataFrame()) is base
    with pytest.raises(ValueError, match=r"lack columns \['machine_failure'\]"):
        add_feedback(base, feedback.drop(columns=[TARGET]))


def test_the_drift_artifacts_table_keeps_short_cells_and_puts_long_details_below() -> None:
    """A laptop screen (1366 px) fits the table only if no cell carries a paragraph: a site's detail and
    its whole list of drifted features go below the table."""
    from edgewave.tasks.drift.checks import ColumnDrift, FleetDrift, SiteCheck
    from edgewave.tasks.drift.steps import summary_markdown

    columns = [ColumnDrift(column=f"sensor_{i}", method="wasserstein", score=0.3 + i / 10, threshold=0.2, drifted=True)
               for i in range(5)]
    detail = "3 unreadable window(s) skipped and left in the store: " + "; ".join(f"w{i}.parquet: truncated"
                                                                                 for i in range(3))
    sites = [SiteCheck(site="line-1", check_id="c", status="checked", rows_new=900, model_version=2, drifted=True,
                       drifted_share=1.0, columns=columns, detail=detail, rows_other_version=40),
             SiteCheck(site="line-2", check_id="c", status="waiting", rows_new=12, detail="12 new rows < min_samples 300")]
    summary = FleetDrift(check_id="c", model="m", detected=True, reason="1 site drifted", sites_checked=2,
                         sites_drifted=["line-1"], sites_confirmed=["line-1"], sites_waiting=["line-2"], sites_failed=[],
                         top_features=[("sensor_4", 1)], sites=sites)
    text = summary_markdown(summary, {"run": "http://127.0.0.1:5000/#/runs/1"})
    rows = [line for line in text.splitlines() if line.startswith("| line-")]
    assert len(rows) == 2 and all(len(row) <= 110 for row in rows), rows
    assert rows[0] == "| line-1 | checked | v2 (+40) | 100% | sensor_4 (0.70/0.2) +4 | - | - |", rows[0]
    assert (f"- **line-1**: 900 rows; drifted features: sensor_4 (0.70/0.2), sensor_3 (0.60/0.2), sensor_2 (0.50/0.2), "
            f"sensor_1 (0.40/0.2), sensor_0 (0.30/0.2); {detail}") in text
    assert "- **line-2**: 12 rows; 12 new rows < min_samples 300" in text


def test_the_drift_artifact_names_the_retraining_it_started_once() -> None:
    from edgewave.tasks.drift.steps import with_retraining

    text = "# Drift check c: DRIFT DETECTED\n\n2 sites drifted\n\n| site |\n|---|\n| line-1 |"
    linked = with_retraining(text, "retrain after drift at line-1", "http://127.0.0.1:4200/flow-runs/flow-run/9")
    assert linked.splitlines()[:3] == ["# Drift check c: DRIFT DETECTED", "",
                                       "**Retraining it started:** [retrain after drift at line-1]"
                                       "(http://127.0.0.1:4200/flow-runs/flow-run/9)"]
    again = with_retraining(linked, "retrain after drift at line-1", "http://127.0.0.1:4200/flow-runs/flow-run/9")
    assert again.count("Retraining it started") == 1 and "| line-1 |" in again
