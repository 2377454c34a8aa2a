"""`edgewave-site` (and `edgewave serve`): run one edge site. Needs only `.[edge]`.

argparse rather than Typer: the edge image carries no CLI framework (Typer, rich and pygments
are ~9 MB the site never needs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from edgewave.serving.errors import describe
from edgewave.serving.settings import EdgeSettings


def serve(bundle: Path | None, site: str | None, host: str | None = None, port: int | None = None) -> int:
    """Run an edge site until SIGINT/SIGTERM: the inference service, and with `site` its agent
    (with both: image-pinned, the bundle is served and the agent never swaps it)."""
    if bundle is None and site is None:
        print("give --bundle PATH, --site SITE, or both (image-pinned: a Kubernetes pod)", file=sys.stderr)
        return 2
    update = {k: v for k, v in {"site_id": site, "serve_host": host, "serve_port": port}.items() if v is not None}
    try:
        settings = EdgeSettings(**update)
    except ValidationError as exc:
        print(f"invalid settings: {describe(exc)}", file=sys.stderr)
        return 2
    from edgewave.serving.site import run_site

    return run_site(settings, bundle, with_agent=site is not None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgewave-site", description="edgewave edge site: the inference service "
                                     "and its agent. Settings come from EDGEWAVE_* variables.")
    parser.add_argument("--bundle", type=Path, help="serve this bundle folder (verified first); no agent unless "
                        "--site is given too (image-pinned: the agent ships windows, never swaps the model)")
    parser.add_argument("--site", help="run as this site: serve its last-known-good model and run its agent")
    parser.add_argument("--host", help="bind address (default EDGEWAVE_SERVE_HOST)")
    parser.add_argument("--port", type=int, help="port (default EDGEWAVE_SERVE_PORT)")
    args = parser.parse_args(argv)
    return serve(args.bundle, args.site, args.host, args.port)
