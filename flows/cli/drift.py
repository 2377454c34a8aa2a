"""`edgewave drift check` and `edgewave drift retrain`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from edgewave.flows.cli.console import console, failed, fleet_file, out, prepare_flows, settings
from edgewave.tasks.platform.settings import use

if TYPE_CHECKING:
    from rich.console import Console

    from edgewave.tasks.drift.checks import FleetDrift

drift_app = typer.Typer(no_args_is_help=True, help="Drift checks and retraining.")


def print_drift(summary: FleetDrift, to: Console = out) -> None:
    """The fleet's drift table: each site's verdict, rows, version, drifted share and top features."""
    from rich.table import Table

    table = Table("site", "status", "rows", "v", "drifted", "top features (score/threshold)", "in a row",
                  title=f"{summary.check_id}: {'DRIFT DETECTED' if summary.detected else 'no fleet drift'}")
    for c in summary.sites:
        top = ", ".join(f"{col.column} {col.score:.2f}/{col.threshold:g}"
                        for col in sorted(c.columns, key=lambda col: -col.severity) if col.drifted)
        table.add_row(c.site, c.status if not c.detail else f"{c.status} ({c.detail})", str(c.rows_new),
                      str(c.model_version or "-"), f"{c.drifted_share:.0%}" if c.status == "checked" else "-",
                      top or "-", str(c.consecutive))
    to.print(table)
    reports = {c.report.rsplit("/", 1)[0] for c in summary.sites if c.report}
    to.print(summary.reason + (f"\nEvidently reports: {', '.join(sorted(reports))}" if reports else ""))


@drift_app.command("check")
def drift_check(
    as_json: Annotated[bool, typer.Option("--json", help="Print the fleet summary as JSON.")] = False,
) -> None:
    """Check every site's new sample windows for drift; emits the drift event when the policy says so."""
    loaded = settings()
    fleet_file(loaded)
    from edgewave.flows.drift import drift_monitor

    try:
        prepare_flows(loaded)
        with use(loaded):
            summary = drift_monitor()
    except Exception as exc:  # the run log has the traceback; say what failed, plainly
        failed("drift check", exc)
    print_drift(summary, console if as_json else out)  # with --json, stdout holds the JSON alone
    if as_json:
        print(summary.model_dump_json(indent=1))


@drift_app.command("retrain")
def drift_retrain() -> None:
    """Retrain with the sites' labelled feedback and roll the new version out (what the drift event starts)."""
    loaded = settings()
    fleet_file(loaded)
    from edgewave.flows.retrain import retrain_on_drift

    try:
        prepare_flows(loaded)
        with use(loaded):
            result = retrain_on_drift(reason="started by hand")
    except Exception as exc:  # the run log has the traceback; say what failed, plainly
        failed("retraining", exc)
    release = result["release"]
    console.print(f"v{release['version']}: {'staged' if release['staged'] else 'rejected'} ({release['gate_reason']})")
    if result["rollout"]:
        console.print(f"rollout {result['rollout']['rollout_id']}: {result['rollout']['status']}")
