"""`edgewave rollout` and `edgewave rollback`: a version to the fleet in waves, or back."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from edgewave.flows.cli.console import console, failed, fleet_file, prepare_flows, refuse, settings
from edgewave.tasks.platform.progress import listening
from edgewave.tasks.platform.settings import Settings, use


def run_rollout(loaded: Settings, kind: str, **parameters) -> None:
    """Run the rollout or rollback flow and print how it ended; exit 0 (succeeded, noop), 1 (rolled back,
    held) or 2 (refused: another rollout runs, a version or alias missing, the remote's history rewritten)."""
    fleet_file(loaded)  # a bad policy fails here, before anything is deployed
    from rich.table import Table

    from edgewave.flows.rollout import result_of
    from edgewave.flows.rollout import rollback as rollback_flow
    from edgewave.flows.rollout import rollout as rollout_flow
    from edgewave.tasks.rollout.gitops import HistoryRewritten
    from edgewave.tasks.rollout.lease import RolloutBusy

    prepare_flows(loaded)
    with use(loaded), listening(console):
        state = (rollback_flow if kind == "rollback" else rollout_flow)(**parameters, return_state=True)
    try:
        result = result_of(state)
    except (RolloutBusy, LookupError, HistoryRewritten) as exc:
        refuse(f"{kind} refused", str(exc))
    except Exception as exc:  # the run log has the traceback; say what failed, plainly
        failed(kind, exc)
    table = Table("wave", "sites", "status", "decision", "reason", "deferred", "failed", title=result["rollout_id"])
    for row in result["waves"]:
        table.add_row(*(str(row[k]) for k in ("wave", "sites", "status", "decision", "reason", "deferred", "failed")))
    console.print(table)
    for line in result.get("reasons", []):
        console.print(line)
    if result.get("judgement"):
        judged = Table(*result["judgement"][0], title="how each wave was judged: changed sites against controls, "
                       "before the wave → now")
        for row in result["judgement"]:
            judged.add_row(*(str(v) for v in row.values()))
        console.print(judged)
    console.print(f"{result['kind']} of v{result['version']} {result['status']}: {result['reason']}")
    print(json.dumps({"rollout_id": result["rollout_id"], "kind": result["kind"], "version": result["version"],
                      "status": result["status"]}))
    raise typer.Exit(0 if result["status"] in ("succeeded", "noop") else 1)


def rollout(
    version: Annotated[int, typer.Argument(help="Registered model version to roll out.")],
    reason: Annotated[str, typer.Option(help="Why, for the record (Git, MLflow, the Prefect run).")] = "",
    wait: Annotated[bool, typer.Option(help="If another rollout of the model runs, wait for it to end.")] = False,
) -> None:
    """Roll a model version out to the fleet in waves, with canary analysis and rollback."""
    run_rollout(settings(), "rollout", version=version, reason=reason, wait=wait)


def rollback(
    to: Annotated[int | None, typer.Option(help="Version to return to (default: the one @previous points at).")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the record (Git, MLflow, the Prefect run).")] = "",
    wait: Annotated[bool, typer.Option(help="If another rollout of the model runs, wait for it to end.")] = False,
) -> None:
    """Return the fleet to an older version through the same waves and analysis, marked as a rollback."""
    run_rollout(settings(), "rollback", to=to, reason=reason, wait=wait)


def reconcile() -> None:
    """After someone rewrote the desired-state remote's history (and you looked at what they did):
    accept it, and release the lease of a rollout that held because of it."""
    loaded = settings()
    from edgewave.tasks.rollout.steps import reconcile as accept

    try:
        accept(loaded, console.print)
    except (OSError, RuntimeError) as exc:
        refuse("reconcile failed", str(exc))


def approve(
    reason: Annotated[str, typer.Option(help="Why the next wave may go: kept in the rollout record and Git.")],
    run: Annotated[str | None, typer.Option(help="The paused run's name or id (default: the only one paused).")] = None,
) -> None:
    """Let a rollout paused at a manual gate go on to its next wave (as Resume in the Prefect UI does)."""
    answer(True, reason, run)


def reject(
    reason: Annotated[str, typer.Option(help="Why it must not go on: kept in the rollout record and Git.")],
    run: Annotated[str | None, typer.Option(help="The paused run's name or id (default: the only one paused).")] = None,
) -> None:
    """Stop a rollout paused at a manual gate: it rolls back every site it changed."""
    answer(False, reason, run)


def answer(approved: bool, reason: str, run: str | None) -> None:
    loaded = settings()
    from edgewave.tasks.rollout.steps import answer_gate

    prepare_flows(loaded)
    try:
        with use(loaded):
            name = answer_gate(approved, reason, run)
    except (LookupError, ValueError) as exc:
        refuse("approve" if approved else "reject", str(exc))
    console.print(f"{name}: {'approved, the next wave goes' if approved else 'rejected, it rolls back'}: {reason}")
