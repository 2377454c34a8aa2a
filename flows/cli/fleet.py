"""`edgewave fleet …` (the local fleet: site processes or containers on loopback ports, their
traffic, logs and Prometheus configuration) and `edgewave exporter`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from edgewave.flows.cli.console import console, fleet_file, out, refuse, settings

if TYPE_CHECKING:
    from edgewave.tasks.fleet.local import SiteStatus

fleet_app = typer.Typer(no_args_is_help=True, help="The local fleet: site processes on loopback ports.")


def print_fleet(rows: list[SiteStatus]) -> None:
    from rich.table import Table

    table = Table("site", "port", "pid / container", "process", "ready", "serving", "desired")
    for r in rows:
        table.add_row(r.site, str(r.port or ""), r.container or str(r.pid or ""), "up" if r.running else "down",
                      "yes" if r.ready else "no", f"v{r.version}" if r.version else "-",
                      f"v{r.desired}" if r.desired else "-")
    out.print(table)
    for r in rows:  # something else answers on its address: never shown as the site
        if r.problem:
            out.print(f"{r.site}: not ready: {r.problem}")


@fleet_app.command("up")
def fleet_up(
    count: Annotated[int | None, typer.Argument(help="How many sites (default: all local sites).")] = None,
    containers: Annotated[bool, typer.Option("--containers", help="Run each site as a container of the serving "
                                             "image, sharing only the network with this machine.")] = False,
    image: Annotated[str | None, typer.Option(help="Serving image for --containers (default: the newest "
                                              "release's).")] = None,
) -> None:
    """Start the fleet's local sites (each `edgewave serve --site`, or a container), recording what started."""
    loaded = settings()
    from edgewave.tasks.fleet import local
    from edgewave.tasks.fleet.containers import ContainerSiteError

    if containers and image is None:
        from edgewave.tasks.release.registry import newest_image

        image = newest_image(loaded)
    try:
        print_fleet(local.up(loaded, fleet_file(loaded).fleet, count, in_containers=containers, image=image))
    except (ContainerSiteError, RuntimeError, TimeoutError) as exc:
        refuse("fleet up failed", str(exc))


@fleet_app.command("traffic")
def fleet_traffic(
    rate: Annotated[float, typer.Option(help="Requests per second to each site.")] = 20.0,
    seconds: Annotated[float | None, typer.Option(help="Stop after this long (default: until Ctrl-C).")] = None,
) -> None:
    """Send sensor traffic to the local sites (what a plant would), so rollouts have something to judge.

    Rows come from the dataset spec's simulated machine, with their true outcomes as feedback;
    for a spec without one, from the production bundle's training reference, without feedback."""
    import threading

    from edgewave.tasks.platform.monitoring import MonitoringStore
    from edgewave.tasks.sim.traffic import Traffic, source_for

    loaded = settings()
    sites = [s for s in fleet_file(loaded).fleet.sites if s.kind == "local"]
    try:
        source = source_for(loaded)
    except (ValueError, OSError) as exc:
        refuse("no traffic", str(exc))
    feedback = MonitoringStore.of(loaded) if source.target else None
    console.print(f"sending {rate:g} requests/s of {type(source).__name__.lower()} rows to {len(sites)} sites; "
                  "Ctrl-C stops")
    traffic = Traffic(sites, source, rate_per_site=rate, feedback_store=feedback).start()
    try:
        threading.Event().wait(seconds)  # until the time is up, or forever (Ctrl-C)
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
    loaded = settings()
    from edgewave.tasks.fleet import local

    try:
        sys.stdout.write(local.logs(loaded, site, lines) + "\n")
    except FileNotFoundError as exc:
        refuse("no logs", str(exc))


@fleet_app.command("down")
def fleet_down() -> None:
    """Stop the sites `fleet up` started, by pid."""
    loaded = settings()
    from edgewave.tasks.fleet import local

    stopped = local.down(loaded, fleet_file(loaded).fleet)
    console.print(f"stopped {len(stopped)} site(s): {', '.join(stopped) or 'none running'}")


@fleet_app.command("status")
def fleet_status() -> None:
    """Each site's process, readiness, served and desired version."""
    loaded = settings()
    from edgewave.tasks.fleet import local

    print_fleet(local.status(loaded, fleet_file(loaded).fleet))


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

    fleet = fleet_file(settings()).fleet
    config = (agent_config(fleet, remote_write, interval, plant) if remote_write
              else scrape_config(fleet, interval, exporter, rules))
    sys.stdout.write(yaml.safe_dump(config, sort_keys=False))


@fleet_app.command("alert-rules")
def fleet_alert_rules() -> None:
    """Print the fleet's Prometheus alerting rules (check them with `promtool check rules`)."""
    from edgewave.tasks.rollout.prometheus import alert_rules_yaml

    sys.stdout.write(alert_rules_yaml(fleet_file(settings())))


def exporter(
    port: Annotated[int, typer.Option(help="Port of /metrics.")] = 9108,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    refresh: Annotated[float, typer.Option(help="Seconds between reads of Git and the store.")] = 15.0,
) -> None:
    """Serve the control plane's metrics (last rollout, last drift check) for the central Prometheus."""
    loaded = settings()
    from edgewave.tasks.fleet.exporter import serve

    serve(loaded, host, port, refresh)
