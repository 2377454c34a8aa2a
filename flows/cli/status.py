"""`edgewave status` (the whole story, on stdout), and `edgewave up` / `edgewave down` (the real
servers on this machine)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from edgewave.flows.cli.console import console, out, refuse, settings
from edgewave.flows.cli.fleet import print_fleet


def print_drift_status(drift: dict) -> None:
    last = drift["last_check"]
    if last is None:
        out.print("drift: no check yet")
    else:
        verdicts = ", ".join(
            f"{s['site']} {'DRIFT' if s['drifted'] else s['status']}"
            + (f" ({s['top_feature']}, {s['in_a_row']} in a row)" if s["drifted"] else "") for s in last["sites"])
        out.print(f"last drift check {last['check_id']} at {last['at']}: "
                  f"{'DRIFT DETECTED' if last['detected'] else 'no fleet drift'}; confirmed: "
                  f"{', '.join(last['confirmed']) or 'none'}\n  {verdicts}")
    if drift["cooldown_until"]:
        out.print(f"retraining held back by the cooldown until {drift['cooldown_until']} "
                  f"(last drift event {drift['last_event']['at']})")


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """The whole story: registry versions and aliases, each site, the rollout in progress and the last
    one, the last drift check and its cooldown, and the Prefect and MLflow UIs when they run."""
    loaded = settings()
    from edgewave.tasks.fleet.local import SiteStatus
    from edgewave.tasks.fleet.status import describe_rollout, whole_state

    state = whole_state(loaded)
    if as_json:
        json.dump(state, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    reg = state["registry"]
    out.print(f"model {reg['model']} ({reg['tracking_uri']})")
    out.print("aliases: " + (", ".join(f"@{a} → v{v}" for a, v in reg["aliases"].items()) or "none"))
    for v in reg["versions"]:
        out.print(f"  v{v['version']} {' '.join('@' + a for a in v['aliases'])}  "
                  f"{v['tags'].get('family', '')} {v['tags'].get('metrics', '')} gate={v['tags'].get('gate.passed', '?')}")
    fleet_state = state["fleet"]
    if "sites" in fleet_state:
        print_fleet([SiteStatus(**s) for s in fleet_state["sites"]])
        if fleet_state["rollout_in_progress"]:
            out.print("in progress: " + describe_rollout(fleet_state["rollout_in_progress"]))
        last = fleet_state["last_rollout"]
        if last:
            out.print(f"last {last.get('kind', 'rollout')} {last['id']}: {last['status']} ({last['reason']})")
        print_drift_status(fleet_state["drift"])
    else:
        out.print(f"fleet: {fleet_state['error']}", style="red")
    for name, url in state["links"].items():
        out.print(f"{ {'prefect': 'Prefect', 'mlflow': 'MLflow'}.get(name, name)} UI: {url}")
    out.print("writes to: " + ", ".join(f"{what} {where}" for what, where in state["writes"].items()))


def up(
    prefect_port: Annotated[int, typer.Option(help="Port of the Prefect server (UI and API).")] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="Port of the MLflow tracking server.")] = 5050,
    prometheus_port: Annotated[int, typer.Option(help="Port of the central Prometheus (with "
                                                      "EDGEWAVE_CENTRAL_PROMETHEUS=true; its agent takes the next).")] = 9090,
) -> None:
    """Start a Prefect server, an MLflow server and a process worker on 127.0.0.1; deploy prefect.yaml
    (with EDGEWAVE_CENTRAL_PROMETHEUS=true also a central Prometheus fed by an agent scraping the fleet)."""
    loaded = settings()
    from edgewave.tasks.fleet import servers

    try:
        stack = servers.up(loaded, prefect_port, mlflow_port, log=console.print, prometheus_port=prometheus_port)
    except (RuntimeError, TimeoutError) as exc:
        refuse("make up failed", str(exc))
    out.print(f"Prefect UI  {stack.prefect_url}   (API {stack.prefect_api})")
    out.print(f"MLflow UI   {stack.mlflow_url}")
    if stack.prometheus_url:
        out.print(f"Prometheus  {stack.prometheus_url}   (central: alerts, and the rollouts' "
                  "telemetry via the agent scraping the fleet)")
    out.print(f"worker pid {stack.worker_pid} on work pool {servers.WORK_POOL}; state in {loaded.home}")
    out.print(f"to use them from this shell: export PREFECT_API_URL={stack.prefect_api} "
              f"EDGEWAVE_TRACKING_URI={stack.mlflow_url}")


def down() -> None:
    """Stop what `edgewave up` started, by pid."""
    loaded = settings()
    from edgewave.tasks.fleet import servers

    stopped = servers.down(loaded)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
