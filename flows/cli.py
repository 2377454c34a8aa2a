"""The `edgewave` command line. Heavy packages are imported inside commands, so `edgewave
serve` at the edge never loads the control plane."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from edgewave.serving import cli as edge_cli
from edgewave.serving.errors import Actionable, describe
from edgewave.serving.redact import redact
from edgewave.tasks.platform.progress import listening
from edgewave.tasks.platform.settings import Settings, use

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="edgewave: edge-to-cloud MLOps for factory fleets.")
console = Console(stderr=True, soft_wrap=True)
DEBUG = {"on": False}


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", envvar="EDGEWAVE_DEBUG",
                                        help="Show the traceback of an expected failure too.")] = False,
) -> None:
    DEBUG["on"] = debug


def main() -> None:
    """The `edgewave` command. A failure a person can act on (a bad file, an unreachable server, a
    missing engine, a refused bundle) ends in one line naming what and where, and exit code 2;
    `--debug` or EDGEWAVE_DEBUG=1 shows its traceback as well."""
    try:
        app()
    except Actionable as exc:
        if DEBUG["on"]:
            raise
        console.print(f"[red]error:[/red] {redact(str(exc))}", highlight=False)
        sys.exit(2)


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        console.print(f"[red]invalid settings:[/red] {describe(exc)}")
        raise typer.Exit(2) from None
    settings.apply_runtime_environment()
    return settings


def _check_release_inputs(settings: Settings) -> None:
    """Read the dataset spec and the data file as the release will, and find the engine a required
    image needs: refuse in one line what would otherwise fail minutes into the run."""
    from edgewave.tasks.platform import engine
    from edgewave.tasks.release.spec import load_spec
    from edgewave.tasks.release.userdata import load_user_data

    spec = load_spec(settings.dataset)
    if settings.data_path is not None:
        load_user_data(settings.data_path, spec)
    if settings.image_required:
        engine.require(settings)


def _failed(what: str, exc: Exception) -> None:
    """End a command whose flow run failed: one line; exit 2 for a failure a person can act on, else 1."""
    console.print(f"[red]{what} failed:[/red] {type(exc).__name__}: {redact(str(exc))}", highlight=False)
    raise typer.Exit(2 if isinstance(exc, Actionable) else 1) from None


@app.command()
def release(
    seed: Annotated[int | None, typer.Option(help="Seed of the generated training data (default: a new one).")] = None,
    shuffle_labels: Annotated[bool, typer.Option(help="Train on shuffled labels (a deliberately bad model, for demos).")] = False,
    force: Annotated[bool, typer.Option(help="Move @staging even if the quality gate rejects (tagged gate.forced).")] = False,
) -> None:
    """Train, export, sign, register and gate a new model version."""
    settings = _settings()
    if seed is not None:
        settings = settings.model_copy(update={"data_seed": seed})
    _check_release_inputs(settings)  # a bad spec or data file fails here, before a flow run starts
    from edgewave.flows.release import release as release_flow

    try:
        with use(settings), listening(console):
            result = release_flow(shuffle_labels, force)
    except Exception as exc:  # the flow's log above has the traceback; say what failed, plainly
        _failed("release", exc)
    verdict = "[green]PASSED → @staging[/green]" if result.staged else "[yellow]REJECTED[/yellow]"
    console.print(f"{result.model} [bold]v{result.version}[/bold] ({result.family}) gate {verdict}: {result.gate_reason}")
    console.print(f"bundle: {result.bundle_url}")
    print(json.dumps({"model": result.model, "version": result.version, "staged": result.staged}))


@app.command()
def serve(
    bundle: Annotated[Path | None, typer.Option(help="Serve this bundle folder (verified first); no agent, unless --site is given too (image-pinned: "
                                                    "the agent ships windows and never swaps the model).")] = None,
    site: Annotated[str | None, typer.Option(help="Run as this site: serve its last-known-good model and run its agent.")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default EDGEWAVE_SERVE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default EDGEWAVE_SERVE_PORT).")] = None,
) -> None:
    """Run an edge site: the inference service, and with --site its agent (what `edgewave-site` does)."""
    raise typer.Exit(edge_cli.serve(bundle, site, host, port))


def _run_rollout(settings: Settings, kind: str, **parameters) -> None:
    """Run the rollout or rollback flow and print how it ended; exit 0 (succeeded, noop), 1 (rolled back,
    held) or 2 (refused: another rollout runs, a version or alias missing)."""
    _fleet(settings)  # a bad policy fails here, before anything is deployed
    from edgewave.flows.rollout import result_of
    from edgewave.flows.rollout import rollback as rollback_flow
    from edgewave.flows.rollout import rollout as rollout_flow
    from edgewave.tasks.rollout.lease import RolloutBusy

    with use(settings), listening(console):
        state = (rollback_flow if kind == "rollback" else rollout_flow)(**parameters, return_state=True)
    try:
        result = result_of(state)
    except (RolloutBusy, LookupError) as exc:
        console.print(f"[red]{kind} refused:[/red] {exc}")
        raise typer.Exit(2) from None
    except Exception as exc:  # the flow's log above has the traceback; say what failed, plainly
        _failed(kind, exc)
    from rich.table import Table

    table = Table("wave", "sites", "status", "decision", "reason", "deferred", "failed", title=result["rollout_id"])
    for row in result["waves"]:
        table.add_row(*(str(row[k]) for k in ("wave", "sites", "status", "decision", "reason", "deferred", "failed")))
    console.print(table)
    console.print(f"{result['kind']} of v{result['version']} {result['status']}: {result['reason']}")
    print(json.dumps({"rollout_id": result["rollout_id"], "kind": result["kind"], "version": result["version"],
                      "status": result["status"]}))
    raise typer.Exit(0 if result["status"] in ("succeeded", "noop") else 1)


@app.command()
def rollout(
    version: Annotated[int, typer.Argument(help="Registered model version to roll out.")],
    reason: Annotated[str, typer.Option(help="Why, for the record (Git, MLflow, the Prefect run).")] = "",
    wait: Annotated[bool, typer.Option(help="If another rollout of the model runs, wait for it to end.")] = False,
) -> None:
    """Roll a model version out to the fleet in waves, with canary analysis and rollback."""
    _run_rollout(_settings(), "rollout", version=version, reason=reason, wait=wait)


@app.command()
def rollback(
    to: Annotated[int | None, typer.Option(help="Version to return to (default: the one @previous points at).")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the record (Git, MLflow, the Prefect run).")] = "",
    wait: Annotated[bool, typer.Option(help="If another rollout of the model runs, wait for it to end.")] = False,
) -> None:
    """Return the fleet to an older version through the same waves and analysis, marked as a rollback."""
    _run_rollout(_settings(), "rollback", to=to, reason=reason, wait=wait)


data_app = typer.Typer(no_args_is_help=True, help="Your data set and its dataset spec.")
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    path: Annotated[Path | None, typer.Argument(help="CSV/Parquet file (default: EDGEWAVE_DATA_PATH).")] = None,
) -> None:
    """Read a data file through the dataset spec (EDGEWAVE_DATASET) as a release would, and show what it holds."""
    from rich.table import Table

    from edgewave.tasks.release.spec import SpecError, load_spec
    from edgewave.tasks.release.userdata import DataValidationError, load_user_data

    settings = _settings()
    path = path or settings.data_path
    try:
        spec = load_spec(settings.dataset)
        if path is None:
            raise DataValidationError("no file: give one or set EDGEWAVE_DATA_PATH")
        frame = load_user_data(path, spec)
    except (SpecError, DataValidationError) as exc:
        console.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from None
    table = Table("column", "header in the file", "kind", "unit", "min", "max", title=f"{path} as {spec.name!r}")
    for column in spec.columns:
        values = frame[column.name]
        table.add_row(column.name, column.source, column.kind, column.unit, f"{values.min():g}", f"{values.max():g}")
    console.print(table)
    positive = int(frame[spec.target.name].sum())
    console.print(f"{len(frame)} rows kept; target {spec.target.source!r}: {positive} {spec.class_labels[1]} "
                  f"({positive / len(frame):.2%}); derived: {', '.join(d.name for d in spec.derived) or 'none'}")


drift_app = typer.Typer(no_args_is_help=True, help="Drift checks and retraining.")
app.add_typer(drift_app, name="drift")


def _print_drift(summary) -> None:
    from rich.table import Table

    table = Table("site", "status", "rows", "v", "drifted", "top features (score/threshold)", "in a row",
                  title=f"{summary.check_id}: {'DRIFT DETECTED' if summary.detected else 'no fleet drift'}")
    for c in summary.sites:
        top = ", ".join(f"{col.column} {col.score:.2f}/{col.threshold:g}"
                        for col in sorted(c.columns, key=lambda col: -col.severity) if col.drifted)
        table.add_row(c.site, c.status if not c.detail else f"{c.status} ({c.detail})", str(c.rows_new),
                      str(c.model_version or "-"), f"{c.drifted_share:.0%}" if c.status == "checked" else "-",
                      top or "-", str(c.consecutive))
    console.print(table)
    reports = {c.report.rsplit("/", 1)[0] for c in summary.sites if c.report}
    console.print(summary.reason + (f"\nEvidently reports: {', '.join(sorted(reports))}" if reports else ""))


@drift_app.command("check")
def drift_check(
    as_json: Annotated[bool, typer.Option("--json", help="Print the fleet summary as JSON.")] = False,
) -> None:
    """Check every site's new sample windows for drift; emits the drift event when the policy says so."""
    settings = _settings()
    _fleet(settings)
    from edgewave.flows.drift import drift_monitor

    with use(settings):
        summary = drift_monitor()
    _print_drift(summary)
    if as_json:
        print(summary.model_dump_json(indent=1))


@drift_app.command("retrain")
def drift_retrain() -> None:
    """Retrain with the sites' labelled feedback and roll the new version out (what the drift event starts)."""
    settings = _settings()
    _fleet(settings)
    from edgewave.flows.retrain import retrain_on_drift

    with use(settings):
        result = retrain_on_drift(reason="started by hand")
    release = result["release"]
    console.print(f"v{release['version']}: {'staged' if release['staged'] else 'rejected'} ({release['gate_reason']})")
    if result["rollout"]:
        console.print(f"rollout {result['rollout']['rollout_id']}: {result['rollout']['status']}")


@app.command()
def up(
    prefect_port: Annotated[int, typer.Option(help="Port of the Prefect server (UI and API).")] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="Port of the MLflow tracking server.")] = 5050,
    prometheus_port: Annotated[int, typer.Option(help="Port of the central Prometheus (with "
                                                      "EDGEWAVE_CENTRAL_PROMETHEUS=true; its agent takes the next).")] = 9090,
) -> None:
    """Start a Prefect server, an MLflow server and a process worker on 127.0.0.1; deploy prefect.yaml
    (with EDGEWAVE_CENTRAL_PROMETHEUS=true also a central Prometheus fed by an agent scraping the fleet)."""
    settings = _settings()
    from edgewave.tasks.platform import servers

    try:
        stack = servers.up(settings, prefect_port, mlflow_port, log=console.print, prometheus_port=prometheus_port)
    except (RuntimeError, TimeoutError) as exc:
        console.print(f"[red]make up failed:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"[green]Prefect UI[/green]  {stack.prefect_url}   (API {stack.prefect_api})")
    console.print(f"[green]MLflow UI[/green]   {stack.mlflow_url}")
    if stack.prometheus_url:
        console.print(f"[green]Prometheus[/green]  {stack.prometheus_url}   (central: alerts, and the rollouts' "
                      "telemetry via the agent scraping the fleet)")
    console.print(f"worker pid {stack.worker_pid} on work pool {servers.WORK_POOL}; state in {settings.home}")
    console.print(f"to use them from this shell: export PREFECT_API_URL={stack.prefect_api} "
                  f"EDGEWAVE_TRACKING_URI={stack.mlflow_url}")


@app.command()
def down() -> None:
    """Stop what `edgewave up` started, by pid."""
    settings = _settings()
    from edgewave.tasks.platform import servers

    stopped = servers.down(settings)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


demo_app = typer.Typer(no_args_is_help=True, help="The whole loop on this machine, and the rollback demo.")
app.add_typer(demo_app, name="demo")


def _print_rollout(r: dict) -> None:
    console.print(f"rollout {r['rollout_id']}: [bold]{r['status']}[/bold] ({r['reason']})")
    console.print("sites now serve: " + ", ".join(f"{k}=v{v}" for k, v in r["served"].items()))
    if r.get("timeline"):
        console.print(f"timeline: {r['timeline']}")


def _print_phases(phases: dict[str, float], total: float) -> None:
    """Where the time went, phase by phase, and a JSON line with the same (what bench/firstrun.py reads)."""
    console.print("phases: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())
                  + f"; total {total:.1f} s (with Prefect's start-up)", highlight=False)
    print(json.dumps({"phases": phases, "total_seconds": round(total, 1)}))


@demo_app.command("loop")
def demo_loop(
    keep_fleet: Annotated[bool, typer.Option(help="Leave the local sites running afterwards.")] = False,
    rate: Annotated[float, typer.Option(help="Requests per second sent to each site.")] = 20.0,
    drift: Annotated[bool, typer.Option(help="After the rollout, drift two sites and retrain on the drift event.")] = True,
) -> None:
    """Release → fleet up → traffic → rollout in waves → two sites drift → drift check → retrain → rollout."""
    import time

    started = time.monotonic()
    settings = _settings()
    _fleet(settings)
    from edgewave.flows.demo import loop
    from edgewave.tasks.drift.checks import FleetDrift

    with use(settings), listening(console):
        result = loop(settings, keep_fleet, rate, drift)
    if result["rollout"]:
        _print_rollout(result["rollout"])
    if result.get("drift"):
        _print_drift(FleetDrift.model_validate(result["drift"]))
    retrain = result.get("retrain")
    if retrain:
        released = retrain["release"]
        console.print(f"retrained after drift: v{released['version']} "
                      f"{'staged' if released['staged'] else 'rejected'} ({released['gate_reason']})")
        if retrain["rollout"]:
            _print_rollout(retrain["rollout"])
    _print_phases(result.get("phases", {}), time.monotonic() - started)
    if not retrain and drift and result.get("drift"):
        console.print("[red]the drift was not detected: no retraining[/red]")
        raise typer.Exit(1)


@demo_app.command("rollback")
def demo_rollback(
    keep_fleet: Annotated[bool, typer.Option(help="Leave the local sites running afterwards.")] = False,
    rate: Annotated[float, typer.Option(help="Requests per second sent to each site.")] = 20.0,
) -> None:
    """Roll out a deliberately bad model; exit 0 only if it was rolled back and no site kept it."""
    settings = _settings()
    _fleet(settings)
    from edgewave.flows.demo import bad_rollout

    with use(settings), listening(console):
        r = bad_rollout(settings, keep_fleet, rate)
    on_bad = [site for site, v in r["served"].items() if v == r["bad_version"]]
    _print_rollout(r)
    if r["status"] == "rolled_back" and not on_bad:
        console.print(f"[green]the bad model v{r['bad_version']} was caught and rolled back; "
                      f"@production stays v{r['production']}[/green]")
        return
    console.print(f"[red]the bad model was not rolled back everywhere (status {r['status']}, on it: {on_bad})[/red]")
    raise typer.Exit(1)


fleet_app = typer.Typer(no_args_is_help=True, help="The local fleet: site processes on loopback ports.")
app.add_typer(fleet_app, name="fleet")


def _fleet(settings: Settings):
    from edgewave.tasks.rollout.policy import PolicyError, load_fleet_file

    try:
        return load_fleet_file(settings.fleet_path)
    except PolicyError as exc:
        console.print(f"[red]invalid fleet file:[/red] {exc}")
        raise typer.Exit(2) from None


def _print_fleet(rows) -> None:
    from rich.table import Table

    table = Table("site", "port", "pid / container", "process", "ready", "serving", "desired")
    for r in rows:
        table.add_row(r.site, str(r.port or ""), r.container or str(r.pid or ""), "up" if r.running else "down",
                      "yes" if r.ready else "no", f"v{r.version}" if r.version else "-",
                      f"v{r.desired}" if r.desired else "-")
    console.print(table)


@fleet_app.command("up")
def fleet_up(
    count: Annotated[int | None, typer.Argument(help="How many sites (default: all local sites).")] = None,
    containers: Annotated[bool, typer.Option("--containers", help="Run each site as a container of the serving "
                                             "image, sharing only the network with this machine.")] = False,
    image: Annotated[str | None, typer.Option(help="Serving image for --containers (default: the newest "
                                              "release's).")] = None,
) -> None:
    """Start the fleet's local sites (each `edgewave serve --site`, or a container), recording what started."""
    settings = _settings()
    from edgewave.tasks.platform import fleet
    from edgewave.tasks.platform.containers import ContainerSiteError

    if containers and image is None:
        from edgewave.tasks.release.registry import newest_image

        image = newest_image(settings)
    try:
        _print_fleet(fleet.up(settings, _fleet(settings).fleet, count, in_containers=containers, image=image))
    except (ContainerSiteError, RuntimeError, TimeoutError) as exc:
        console.print(f"[red]fleet up failed:[/red] {exc}")
        raise typer.Exit(2) from None


@fleet_app.command("traffic")
def fleet_traffic(
    rate: Annotated[float, typer.Option(help="Requests per second to each site.")] = 20.0,
    seconds: Annotated[float | None, typer.Option(help="Stop after this long (default: until Ctrl-C).")] = None,
) -> None:
    """Send sensor traffic to the local sites (what a plant would), so rollouts have something to judge.

    Rows come from the dataset spec's simulated machine, with their true outcomes as feedback;
    for a spec without one, from the production bundle's training reference, without feedback."""
    import time

    from edgewave.tasks.drift.store import MonitoringStore
    from edgewave.tasks.sim.traffic import Traffic, source_for

    settings = _settings()
    sites = [s for s in _fleet(settings).fleet.sites if s.kind == "local"]
    try:
        source = source_for(settings)
    except (ValueError, OSError) as exc:
        console.print(f"[red]no traffic:[/red] {exc}")
        raise typer.Exit(2) from None
    feedback = MonitoringStore.of(settings) if source.target else None
    console.print(f"sending {rate:g} requests/s of {type(source).__name__.lower()} rows to {len(sites)} sites; "
                  "Ctrl-C stops")
    traffic = Traffic(sites, source, rate_per_site=rate, feedback_store=feedback).start()
    try:
        time.sleep(seconds) if seconds else time.sleep(10**9)
    except KeyboardInterrupt:
        pass
    finally:
        statuses = traffic.stop()
    console.print("answers: " + ", ".join(f"{site} {dict(counts)}" for site, counts in statuses.items()))


@fleet_app.command("logs")
def fleet_logs(
    site: Annotated[str, typer.Argument(help="Site id.")],
    lines: Annotated[int, typer.Option(help="How many of the last lines.")] = 200,
) -> None:
    """What a local site (process or container) logged, credentials redacted."""
    settings = _settings()
    from edgewave.tasks.platform import fleet

    try:
        sys.stdout.write(fleet.logs(settings, site, lines) + "\n")
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@fleet_app.command("down")
def fleet_down() -> None:
    """Stop the sites `fleet up` started, by pid."""
    settings = _settings()
    from edgewave.tasks.platform import fleet

    stopped = fleet.down(settings, _fleet(settings).fleet)
    console.print(f"stopped {len(stopped)} site(s): {', '.join(stopped) or 'none running'}")


@fleet_app.command("prometheus-config")
def fleet_prometheus_config(
    interval: Annotated[float, typer.Option(help="Scrape interval in seconds.")] = 5.0,
    exporter: Annotated[str | None, typer.Option(help="host:port of `edgewave exporter` to scrape too.")] = None,
    rules: Annotated[list[str] | None, typer.Option(help="Rule files to load (e.g. the output of "
                                                          "`edgewave fleet alert-rules`).")] = None,
    remote_write: Annotated[str | None, typer.Option(
        help="Write an agent-mode config instead: scrape the fleet's sites and remote-write to this central "
             "Prometheus (http://central:9090/api/v1/write; run it with --web.enable-remote-write-receiver).")] = None,
    plant: Annotated[str | None, typer.Option(help="With --remote-write: the `plant` label of every sample.")] = None,
) -> None:
    """Print a prometheus.yml that scrapes every site of the fleet, labelled by site id (with
    --remote-write: for a plant's `prometheus --agent` that forwards to the central one)."""
    import yaml

    from edgewave.tasks.rollout.prometheus import agent_config, scrape_config

    settings = _settings()
    fleet = _fleet(settings).fleet
    config = (agent_config(fleet, remote_write, interval, plant) if remote_write
              else scrape_config(fleet, interval, exporter, rules))
    sys.stdout.write(yaml.safe_dump(config, sort_keys=False))


@fleet_app.command("alert-rules")
def fleet_alert_rules() -> None:
    """Print the fleet's Prometheus alerting rules (check them with `promtool check rules`)."""
    from edgewave.tasks.rollout.prometheus import alert_rules_yaml

    sys.stdout.write(alert_rules_yaml(_fleet(_settings())))


@app.command()
def exporter(
    port: Annotated[int, typer.Option(help="Port of /metrics.")] = 9108,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    refresh: Annotated[float, typer.Option(help="Seconds between reads of Git and the store.")] = 15.0,
) -> None:
    """Serve the control plane's metrics (last rollout, last drift check) for the central Prometheus."""
    settings = _settings()
    from edgewave.tasks.platform.exporter import serve

    serve(settings, host, port, refresh)


@fleet_app.command("status")
def fleet_status() -> None:
    """Each site's process, readiness, served and desired version."""
    settings = _settings()
    from edgewave.tasks.platform import fleet

    _print_fleet(fleet.status(settings, _fleet(settings).fleet))


def _fleet_state(settings: Settings) -> dict:
    """Each site's desired and reported version, the last rollout with its decisions, the rollout in
    progress, and the last drift check with its cooldown."""
    from dataclasses import asdict

    from edgewave.tasks.drift.store import MonitoringStore
    from edgewave.tasks.platform import fleet
    from edgewave.tasks.platform.status import drift_status, rollout_in_progress
    from edgewave.tasks.rollout.gitops import DesiredStateRepo
    from edgewave.tasks.rollout.policy import PolicyError, load_fleet_file

    try:
        fleet_file = load_fleet_file(settings.fleet_path)
    except PolicyError as exc:
        return {"error": str(exc)}
    sites = [asdict(s) for s in fleet.status(settings, fleet_file.fleet)]  # syncs the controller's clone
    repo = DesiredStateRepo.of(settings)
    cloned = (repo.path / ".git").exists()
    return {"fleet_file": str(settings.fleet_path), "sites": sites,
            "last_rollout": repo.last_record(settings.model_name) if cloned else None,
            "rollout_in_progress": rollout_in_progress(repo, settings.model_name) if cloned else None,
            "drift": drift_status(MonitoringStore.of(settings), settings.model_name,
                                  fleet_file.drift.cooldown_minutes)}


def _print_drift_status(drift: dict) -> None:
    last = drift["last_check"]
    if last is None:
        console.print("drift: no check yet")
    else:
        verdicts = ", ".join(
            f"{s['site']} {'DRIFT' if s['drifted'] else s['status']}"
            + (f" ({s['top_feature']}, {s['in_a_row']} in a row)" if s["drifted"] else "") for s in last["sites"])
        console.print(f"last drift check {last['check_id']} at {last['at']}: "
                      f"{'DRIFT DETECTED' if last['detected'] else 'no fleet drift'}; confirmed: "
                      f"{', '.join(last['confirmed']) or 'none'}\n  {verdicts}", highlight=False)
    if drift["cooldown_until"]:
        console.print(f"retraining held back by the cooldown until {drift['cooldown_until']} "
                      f"(last drift event {drift['last_event']['at']})")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """The whole story: registry versions and aliases, each site, the rollout in progress and the last
    one, the last drift check and its cooldown, and the Prefect and MLflow UIs when they run."""
    settings = _settings()
    from edgewave.tasks.platform.servers import links
    from edgewave.tasks.platform.status import describe_rollout
    from edgewave.tasks.release.registry import check_reachable, registry_state

    check_reachable(settings)
    state = {"registry": registry_state(settings), "fleet": _fleet_state(settings), "links": links(settings)}
    if as_json:
        json.dump(state, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    reg = state["registry"]
    console.print(f"model [bold]{reg['model']}[/bold] ({reg['tracking_uri']})")
    console.print("aliases: " + (", ".join(f"@{a} → v{v}" for a, v in reg["aliases"].items()) or "none"))
    for v in reg["versions"]:
        console.print(f"  v{v['version']} {' '.join('@' + a for a in v['aliases'])}  "
                      f"{v['tags'].get('family', '')} {v['tags'].get('metrics', '')} gate={v['tags'].get('gate.passed', '?')}")
    fleet_state = state["fleet"]
    if "sites" in fleet_state:
        from edgewave.tasks.platform.fleet import SiteStatus

        _print_fleet([SiteStatus(**s) for s in fleet_state["sites"]])
        if fleet_state["rollout_in_progress"]:
            console.print("in progress: " + describe_rollout(fleet_state["rollout_in_progress"]), highlight=False)
        last = fleet_state["last_rollout"]
        if last:
            console.print(f"last {last.get('kind', 'rollout')} {last['id']}: {last['status']} ({last['reason']})")
        _print_drift_status(fleet_state["drift"])
    else:
        console.print(f"[red]fleet:[/red] {fleet_state['error']}")
    for name, url in state["links"].items():
        console.print(f"{ {'prefect': 'Prefect', 'mlflow': 'MLflow'}.get(name, name)} UI: {url}")


if __name__ == "__main__":  # `python -m edgewave.flows.cli`
    main()
