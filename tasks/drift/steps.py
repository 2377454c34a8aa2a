"""Thin Prefect tasks of the drift-monitor flow over tasks/drift/checks.py.

The per-site check is the unit the task runner spreads: a process pool on one machine, a Dask
cluster when one machine is not enough. Everything it shares lives in the monitoring store:
it reads and writes only its own site's ledger there (refused if another check saved it
meanwhile), and puts its HTML report there, so a worker on another machine, with an
EDGEWAVE_HOME of its own, counts every window once and the flow finds every report. A retry
of a site re-reads the same new windows, because the ledger is written only after the check.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from prefect import task

from edgewave.serving.redact import redact
from edgewave.tasks.drift import checks as drift
from edgewave.tasks.drift.reference import reference_for
from edgewave.tasks.platform.fleetfile import DriftPolicy
from edgewave.tasks.platform.monitoring import EVENTS, REPORTS, MonitoringStore, load_ledger, save_ledger
from edgewave.tasks.platform.runs import LOCAL, REMOTE, markdown_link
from edgewave.tasks.platform.settings import Settings

EVENT = "edgewave.drift.detected"


def new_check_id() -> str:
    return f"drift-{datetime.now(UTC):%Y%m%dT%H%M%S%f}"[:-3]


def policy_for(settings: Settings, fleet_policy: DriftPolicy) -> DriftPolicy:
    """The fleet file's drift policy with the dataset spec's per-column thresholds under it: a
    column's threshold comes from the fleet file if it names one, else from the spec."""
    from edgewave.tasks.data.spec import DatasetSpec, load_any_spec

    loaded = load_any_spec(settings.dataset)
    spec = loaded.drift_thresholds() if isinstance(loaded, DatasetSpec) else {}  # an image spec names none
    return fleet_policy.model_copy(update={"column_thresholds": {**spec, **fleet_policy.column_thresholds}})


def check_one_site(settings: Settings, policy: DriftPolicy, check_id: str, site: str) -> drift.SiteCheck:
    """Check one site, put its report in the store and save its ledger there; an error is a
    result, not a crash of the fleet check."""
    store = MonitoringStore.of(settings)
    try:
        ledger = load_ledger(store, site)
        with tempfile.TemporaryDirectory(prefix=f"edgewave-drift-{site}-") as tmp:
            html = Path(tmp) / f"{site}.html"
            result, updated = drift.check_site(
                site, check_id, store, ledger, policy,
                lambda version: reference_for(settings, settings.model_name, version), html)
            if html.exists():
                store.put(html, *REPORTS, check_id, html.name)
                result = result.model_copy(update={"report": store.link(*REPORTS, check_id, html.name)})
        if updated is not ledger:
            save_ledger(store, site, updated)
    except Exception as exc:  # one broken site (corrupt window, missing bundle) must not hide the others
        logging.getLogger("edgewave.drift").exception("drift check of %s failed", site)
        return drift.SiteCheck(site=site, check_id=check_id, status="error",
                               detail=redact(f"{type(exc).__name__}: {exc}"))
    return result


@task(name="check-site-drift", task_run_name="drift-{site}", **LOCAL)
def check_site(settings: Settings, policy: DriftPolicy, check_id: str, site: str) -> drift.SiteCheck:
    return check_one_site(settings, policy, check_id, site)


@task(name="summarise-fleet-drift", **LOCAL)
def summarise(settings: Settings, check_id: str, checks: list[drift.SiteCheck], policy: DriftPolicy) -> drift.FleetDrift:
    summary = drift.summarise(check_id, settings.model_name, checks, policy)
    store = MonitoringStore.of(settings)
    store.write_json(summary.model_dump(), *REPORTS, check_id, "summary.json")
    prune_reports(store, policy.reports_kept)
    return summary


def prune_reports(store: MonitoringStore, keep: int) -> list[str]:
    """Keep the reports of the last `keep` checks in the store: an Evidently page is ~4 MB."""
    checks = store.folders(*REPORTS)
    gone = checks[:-keep] if len(checks) > keep else []
    for check_id in gone:
        store.remove(*REPORTS, check_id)
    return gone


@task(name="log-drift-to-mlflow", **REMOTE)
def log_to_mlflow(settings: Settings, summary: drift.FleetDrift) -> dict[str, str]:
    """One MLflow run per check: per-site metrics, the summary, every checked site's HTML report (a
    healthy site's page is what a person compares a drifted one with; the monitoring store keeps only
    the last `reports_kept` checks, MLflow keeps them all, ~4 MB each).

    Returns where each logged report can be opened.
    """
    from edgewave.tasks.release import registry

    return registry.speaks_to_registry("logging the drift check")(_log_drift_run)(settings, summary)


def _log_drift_run(settings: Settings, summary: drift.FleetDrift) -> dict[str, str]:
    from mlflow.entities import Metric

    from edgewave.tasks.release import registry

    mlc = registry.client(settings)
    experiment_id = registry.ensure_experiment(settings, f"{settings.experiment_name}-drift")
    existing = mlc.search_runs([experiment_id], f"tags.`edgewave.drift_check` = '{summary.check_id}'")
    run = existing[0] if existing else mlc.create_run(
        experiment_id, run_name=summary.check_id,
        tags={"edgewave.drift_check": summary.check_id, "edgewave.model": summary.model,
              "edgewave.drift_detected": str(summary.detected).lower()})
    run_id = run.info.run_id
    metrics = [Metric(f"{name}.{c.site}", float(value), int(time.time() * 1000), 0)
               for c in summary.sites if c.status == "checked"
               for name, value in (("drifted_share", c.drifted_share), ("rows", c.rows_new),
                                   ("prediction_drift_score", c.prediction.score if c.prediction else 0.0))]
    metrics.append(Metric("sites_drifted", len(summary.sites_drifted), int(time.time() * 1000), 0))
    mlc.log_batch(run_id, metrics=metrics)
    mlc.log_text(run_id, json.dumps(summary.model_dump(), indent=1, default=str), "summary.json")
    links: dict[str, str] = {}
    artifact_uri = mlc.get_run(run_id).info.artifact_uri
    store = MonitoringStore.of(settings)
    with tempfile.TemporaryDirectory(prefix="edgewave-drift-reports-") as tmp:
        for check in summary.sites:
            if check.report:
                local = store.get(Path(tmp) / f"{check.site}.html", *REPORTS, summary.check_id, f"{check.site}.html")
                mlc.log_artifact(run_id, str(local), "reports")
                links[check.site] = (registry.artifact_link(settings, run_id, experiment_id, f"reports/{local.name}")
                                     or f"{artifact_uri}/reports/{local.name}")
    mlc.set_terminated(run_id)
    links["run"] = registry.run_link(settings, run_id, experiment_id)
    return links


TOP_IN_CELL = 1  # drifted features named in a table cell; every one of them below the table


def summary_markdown(summary: drift.FleetDrift, links: dict[str, str]) -> str:
    """The Prefect artifact: verdict, a per-site table narrow enough for a laptop screen (1366 px, beside
    the UI's side panels: seven short columns), then one line per site with the rest (rows, windows in a
    row, confidence, every drifted feature, what went wrong), links to the reports."""
    lines = [f"# Drift check {summary.check_id}: {'DRIFT DETECTED' if summary.detected else 'no fleet drift'}",
             "", summary.reason, "", f"MLflow: {markdown_link('drift check run', links.get('run'))}", "",
             "*served*: the version that answered most of the site's rows in these windows (+ rows another "
             "version answered, e.g. during a rollout); the site is judged against that version's reference.", "",
             "| site | status | served | drifted | top feature (score/limit) | prediction drift | report |",
             "|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    for c in summary.sites:
        drifted = [f"{col.column} ({col.score:.2f}/{col.threshold:g})"
                   for col in sorted(c.columns, key=lambda col: -col.severity) if col.drifted]
        top = ", ".join(drifted[:TOP_IN_CELL]) + (f" +{len(drifted) - TOP_IN_CELL}" if len(drifted) > TOP_IN_CELL
                                                  else "") or "-"
        prediction = f"{c.prediction.score:.3f}{' DRIFT' if c.prediction.drifted else ''}" if c.prediction else "-"
        report = markdown_link("report", links.get(c.site) or c.report)
        share = f"{c.drifted_share:.0%}" if c.status == "checked" else "-"
        served = f"v{c.model_version}" + (f" (+{c.rows_other_version})" if c.rows_other_version else "") \
            if c.model_version else "-"
        said = [f"{c.rows_new} rows" if c.rows_new else "",
                f"{c.consecutive} drifted window(s) in a row" if c.consecutive else "",
                f"confidence {c.confidence_reference:.3f} → {c.confidence_current:.3f}"
                if c.confidence_current is not None and c.confidence_reference is not None else "",
                f"drifted features: {', '.join(drifted)}" if drifted else "", c.detail]
        if any(said):
            notes.append(f"- **{c.site}**: " + "; ".join(part for part in said if part))
        lines.append(f"| {c.site} | {c.status} | {served} | {share} | {top} | {prediction} | {report} |")
    lines += ["", *notes] if notes else []
    if summary.top_features:
        lines += ["", "Top drifted features across sites: "
                  + ", ".join(f"{f} ({n} site{'s' if n > 1 else ''})" for f, n in summary.top_features)]
    return "\n".join(lines)


@task(name="publish-drift-summary", **LOCAL)
def publish(summary: drift.FleetDrift, links: dict[str, str]) -> str:
    from prefect.artifacts import create_markdown_artifact

    markdown = summary_markdown(summary, links)
    create_markdown_artifact(markdown, key=artifact_key(summary.model), description=f"drift check {summary.check_id}")
    return markdown


RETRAINING = "**Retraining it started:** "


def artifact_key(model: str) -> str:
    return f"drift-{model}".lower().replace("_", "-")


def with_retraining(markdown: str, run_name: str, url: str | None) -> str:
    """The drift artifact's text with the retraining run that the check's event started, under the verdict."""
    line = RETRAINING + markdown_link(run_name, url) if url else RETRAINING + run_name
    head, _, rest = markdown.partition("\n")
    rest = "\n".join(x for x in rest.split("\n") if not x.startswith(RETRAINING))
    return f"{head}\n\n{line}\n{rest}"


@task(name="link-retraining", **LOCAL)
def link_retraining(model: str, check_id: str, run_name: str, url: str | None) -> bool:
    """Add the retraining run to the drift artifact of check `check_id` (a new version of the same key),
    so the page that said "drift" says what it started. False when the newest artifact is another check's
    (or the API refused: a link is a label, the retraining goes on)."""
    try:
        return _link_retraining(model, check_id, run_name, url)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        logging.getLogger("edgewave").warning("could not link the retraining from the drift artifact: %s", exc)
        return False


def _link_retraining(model: str, check_id: str, run_name: str, url: str | None) -> bool:
    from prefect.artifacts import create_markdown_artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    key = artifact_key(model)
    with get_client(sync_client=True) as client:
        newest = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                       sort=ArtifactSort.CREATED_DESC, limit=1)
    if not newest or newest[0].description != f"drift check {check_id}" or not isinstance(newest[0].data, str):
        return False
    create_markdown_artifact(with_retraining(newest[0].data, run_name, url), key=key,
                             description=f"drift check {check_id}")
    return True


def event_payload(summary: drift.FleetDrift, links: dict[str, str]) -> dict:
    confirmed = [c for c in summary.sites if c.site in summary.sites_confirmed]
    return {
        "check_id": summary.check_id,
        "model": summary.model,
        "summary": summary.reason,
        "sites": summary.sites_confirmed,
        "features": {c.site: c.top_features for c in confirmed},
        "top_features": [f for f, _ in summary.top_features],
        "model_versions": {c.site: c.model_version for c in confirmed},
        "reports": {c.site: links.get(c.site) or c.report for c in confirmed},
        "mlflow_run": links.get("run"),
    }


def in_cooldown(store: MonitoringStore, model: str, cooldown_minutes: float, now: float | None = None) -> float | None:
    """Seconds since the last drift event of this model, if that is within the cooldown."""
    last = (store.read_json(*EVENTS) or {}).get(model)
    elapsed = (now or time.time()) - last["at"] if last else None
    return elapsed if elapsed is not None and elapsed < cooldown_minutes * 60 else None


@task(name="emit-drift-event", **LOCAL)
def emit(settings: Settings, summary: drift.FleetDrift, links: dict[str, str], cooldown_minutes: float) -> str | None:
    """`edgewave.drift.detected` on `edgewave.model.<name>`; at most once per cooldown per model."""
    from prefect import get_run_logger
    from prefect.events import emit_event

    log = get_run_logger()
    store = MonitoringStore.of(settings)
    elapsed = in_cooldown(store, summary.model, cooldown_minutes)
    if elapsed is not None:
        log.info("drift detected, but the last event for %s was %.0f s ago (cooldown %g min): no new event",
                 summary.model, elapsed, cooldown_minutes)
        return None
    event = emit_event(
        EVENT,
        resource={"prefect.resource.id": f"edgewave.model.{summary.model}", "prefect.resource.name": summary.model,
                  "edgewave.model.name": summary.model},
        payload=event_payload(summary, links),
    )
    events = store.read_json(*EVENTS) or {}
    events[summary.model] = {"at": time.time(), "check_id": summary.check_id, "event_id": str(event.id) if event else None}
    store.write_json(events, *EVENTS)
    log.info("emitted %s for %s (event %s): %s", EVENT, summary.model, event.id if event else "-", summary.reason)
    return str(event.id) if event else None
