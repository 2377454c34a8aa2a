"""The `edgewave` command line, one module per command group. Heavy packages are imported inside
commands, so `edgewave serve` at the edge never loads the control plane.

    release, serve, data check                          flows/cli/release.py
    rollout, rollback, reconcile, approve, reject       flows/cli/rollout.py
    drift check, drift retrain                          flows/cli/drift.py
    demo loop, demo rollback                            flows/cli/demo.py
    fleet …, exporter                                   flows/cli/fleet.py
    status, up, down                                    flows/cli/status.py
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from edgewave.flows.cli import demo, drift, fleet, label, release, rollout, status
from edgewave.flows.cli.console import DEBUG, console
from edgewave.serving.errors import Actionable
from edgewave.serving.redact import redact

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  rich_markup_mode=None, help="edgewave: edge-to-cloud MLOps for factory fleets.")


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", envvar="EDGEWAVE_DEBUG",
                                        help="Show Prefect's run log and the traceback of an expected failure too.")] = False,
) -> None:
    DEBUG["on"] = debug


app.command()(release.release)
app.command()(release.serve)
app.add_typer(release.data_app, name="data")
app.command()(rollout.rollout)
app.command()(rollout.rollback)
app.command()(rollout.reconcile)
app.command()(rollout.approve)
app.command()(rollout.reject)
app.add_typer(drift.drift_app, name="drift")
app.add_typer(label.label_app, name="label")
app.add_typer(demo.demo_app, name="demo")
app.add_typer(fleet.fleet_app, name="fleet")
app.command()(fleet.exporter)
app.command()(status.status)
app.command()(status.up)
app.command()(status.down)


def main() -> None:
    """The `edgewave` command. A failure a person can act on (a bad file, an unreachable server, a
    missing engine, a refused bundle) ends in one plain line naming what and where, and exit code 2;
    `--debug` or EDGEWAVE_DEBUG=1 shows its traceback as well."""
    try:
        app()
    except Actionable as exc:
        if DEBUG["on"]:
            raise
        console.print(f"error: {redact(str(exc))}", style="red")
        sys.exit(2)


if __name__ == "__main__":  # `python -m edgewave.flows.cli`
    main()
