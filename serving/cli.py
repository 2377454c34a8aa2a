"""`edgewave-site` (and `edgewave serve`): run one edge site. Needs only `.[edge]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from edgewave.serving.errors import describe
from edgewave.serving.settings import EdgeSettings

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False,
                  help="edgewave edge site: the inference service and its agent.")


@app.command()
def serve(
    bundle: Annotated[Path | None, typer.Option(help="Serve this bundle folder (verified first); no agent.")] = None,
    site: Annotated[str | None, typer.Option(help="Run as this site: serve its last-known-good model and run its agent.")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default EDGEWAVE_SERVE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default EDGEWAVE_SERVE_PORT).")] = None,
) -> None:
    """Run an edge site: the inference service, and with --site its agent."""
    if (bundle is None) == (site is None):
        typer.echo("give exactly one of --bundle PATH or --site SITE", err=True)
        raise typer.Exit(2)
    update = {k: v for k, v in {"site_id": site, "serve_host": host, "serve_port": port}.items() if v is not None}
    try:
        settings = EdgeSettings(**update)
    except ValidationError as exc:
        typer.echo(f"invalid settings: {describe(exc)}", err=True)
        raise typer.Exit(2) from None
    from edgewave.serving.site import run_site

    raise typer.Exit(run_site(settings, bundle, with_agent=site is not None))
