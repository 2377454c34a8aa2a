"""`edgewave demo loop` (what `make run` shows) and `edgewave demo rollback`."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from edgewave.flows.cli.console import console, failed, fleet_file, prepare_flows, settings
from edgewave.flows.cli.drift import print_drift
from edgewave.tasks.platform.progress import listening
from edgewave.tasks.platform.settings import use

demo_app = typer.Typer(no_args_is_help=True, help="The whole loop on this machine, and the rollback demo.")


def print_rollout(r: dict) -> None:
    console.print(f"rollout {r['rollout_id']}: {r['status']} ({r['reason']})")
    console.print("sites now serve: " + ", ".join(f"{k}=v{v}" for k, v in r["served"].items()))
    if r.get("timeline"):
        console.print(f"timeline: {r['timeline']}")


def print_phases(phases: dict[str, float], total: float) -> None:
    """Where the time went, phase by phase, and a JSON line with the same (what bench/firstrun.py reads)."""
    console.print("phases: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())
                  + f"; total {total:.1f} s (with Prefect's start-up)")
    print(json.dumps({"phases": phases, "total_seconds": round(total, 1)}))


@demo_app.command("loop")
def demo_loop(
    keep_fleet: Annotated[bool, typer.Option(help="Leave the local sites running afterwards.")] = False,
    rate: Annotated[float, typer.Option(help="Requests per second sent to each site.")] = 20.0,
    drift: Annotated[bool, typer.Option(help="After the rollout, drift two sites and retrain on the drift event.")] = True,
) -> None:
    """Release → fleet up → traffic → rollout in waves → two sites drift → drift check → retrain → rollout."""
    started = time.monotonic()
    loaded = settings()
    fleet_file(loaded)
    from edgewave.flows.demo import loop
    from edgewave.tasks.drift.checks import FleetDrift

    try:
        prepare_flows(loaded)
        with use(loaded), listening(console):
            result = loop(loaded, keep_fleet, rate, drift)
    except Exception as exc:  # the run log has the traceback; say what failed, plainly
        failed("demo loop", exc)
    if result["rollout"]:
        print_rollout(result["rollout"])
    if result.get("drift"):
        print_drift(FleetDrift.model_validate(result["drift"]), console)
    retrain = result.get("retrain")
    if retrain:
        released = retrain["release"]
        console.print(f"retrained after drift: v{released['version']} "
                      f"{'staged' if released['staged'] else 'rejected'} ({released['gate_reason']})")
        if retrain["rollout"]:
            print_rollout(retrain["rollout"])
    print_phases(result.get("phases", {}), time.monotonic() - started)
    if not retrain and drift and result.get("drift"):
        console.print("the drift was not detected: no retraining", style="red")
        raise typer.Exit(1)


@demo_app.command("rollback")
def demo_rollback(
    keep_fleet: Annotated[bool, typer.Option(help="Leave the local sites running afterwards.")] = False,
    rate: Annotated[float, typer.Option(help="Requests per second sent to each site.")] = 20.0,
) -> None:
    """Roll out a deliberately bad model; exit 0 only if it was rolled back and no site kept it."""
    loaded = settings()
    fleet_file(loaded)
    from edgewave.flows.demo import bad_rollout

    try:
        prepare_flows(loaded)
        with use(loaded), listening(console):
            r = bad_rollout(loaded, keep_fleet, rate)
    except Exception as exc:  # the run log has the traceback; say what failed, plainly
        failed("demo rollback", exc)
    on_bad = [site for site, v in r["served"].items() if v == r["bad_version"]]
    print_rollout(r)
    if r["status"] == "rolled_back" and not on_bad:
        console.print(f"the bad model v{r['bad_version']} was caught and rolled back; "
                      f"@production stays v{r['production']}", style="green")
        return
    console.print(f"the bad model was not rolled back everywhere (status {r['status']}, on it: {on_bad})", style="red")
    raise typer.Exit(1)
