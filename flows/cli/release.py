"""`edgewave release`, `edgewave serve` and `edgewave data check`: making a model and trying it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from edgewave.flows.cli.console import console, failed, out, prepare_flows, read_settings, refuse, settings
from edgewave.serving import cli as edge_cli
from edgewave.tasks.platform.progress import listening
from edgewave.tasks.platform.settings import Settings, use

data_app = typer.Typer(no_args_is_help=True, help="Your data set and its dataset spec.")


def check_release_inputs(loaded: Settings) -> None:
    """Read the dataset spec and the data file as the release will, and find the engine a required
    image needs: refuse in one line what would otherwise fail minutes into the run."""
    from edgewave.tasks.data.images import ImageSpec, load_images
    from edgewave.tasks.data.spec import load_any_spec
    from edgewave.tasks.data.userdata import load_user_data
    from edgewave.tasks.platform import engine

    spec = load_any_spec(loaded.dataset)
    if loaded.data_path is not None:
        if isinstance(spec, ImageSpec):
            load_images(spec, loaded.data_path)
        else:
            load_user_data(loaded.data_path, spec)
    if loaded.image_required:
        engine.require(loaded)


def release(
    seed: Annotated[int | None, typer.Option(help="Seed of the generated training data (default: a new one).")] = None,
    shuffle_labels: Annotated[bool, typer.Option(help="Train on shuffled labels (a deliberately bad model, for demos).")] = False,
    force: Annotated[bool, typer.Option(help="Move @staging even if the quality gate rejects (tagged gate.forced).")] = False,
) -> None:
    """Train, export, sign, register and gate a new model version."""
    loaded = settings()
    if seed is not None:
        loaded = loaded.model_copy(update={"data_seed": seed})
    check_release_inputs(loaded)  # a bad spec or data file fails here, before a flow run starts
    from edgewave.flows.release import release as release_flow
    from edgewave.flows.release import release_for_demo

    try:
        prepare_flows(loaded)
        with use(loaded), listening(console):
            result = release_for_demo(shuffle_labels, force) if shuffle_labels or force else release_flow()
    except Exception as exc:  # the run log has the traceback; say what failed, plainly
        failed("release", exc)
    verdict = "PASSED → @staging" if result.staged else "REJECTED"
    console.print(f"{result.model} v{result.version} ({result.family}) gate {verdict}: {result.gate_reason}",
                  style="green" if result.staged else "yellow")
    console.print(f"bundle: {result.bundle_url}")
    print(json.dumps({"model": result.model, "version": result.version, "staged": result.staged}))


def serve(
    bundle: Annotated[Path | None, typer.Option(help="Serve this bundle folder (verified first); no agent, unless --site is given too (image-pinned: "
                                                    "the agent ships windows and never swaps the model).")] = None,
    site: Annotated[str | None, typer.Option(help="Run as this site: serve its last-known-good model and run its agent.")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default EDGEWAVE_SERVE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default EDGEWAVE_SERVE_PORT).")] = None,
) -> None:
    """Run an edge site: the inference service, and with --site its agent (what `edgewave-site` does).

    Given no trusted keys (EDGEWAVE_TRUSTED_KEYS_DIR, EDGEWAVE_TRUSTED_PUBLIC_KEYS), a site started
    here trusts the release key of this control plane's home, so a bundle this home released is
    served as it is; `edgewave-site` on an edge server trusts only the keys it is given."""
    if bundle is not None and not os.environ.get("EDGEWAVE_TRUSTED_KEYS_DIR") \
            and not os.environ.get("EDGEWAVE_TRUSTED_PUBLIC_KEYS"):
        from edgewave.serving.bundle import parse_public_keys
        from edgewave.tasks.release.bundle import trusted_public_keys

        loaded = read_settings()  # a site started in any folder makes no control-plane home there
        if loaded.signing_key_pem is not None or loaded.signing_key.exists():
            keys = trusted_public_keys(loaded)
            os.environ["EDGEWAVE_TRUSTED_PUBLIC_KEYS"] = keys
            console.print(f"trusting this home's release key(s) {', '.join(parse_public_keys(keys))} "
                          f"({loaded.home}); set EDGEWAVE_TRUSTED_KEYS_DIR to trust others")
    raise typer.Exit(edge_cli.serve(bundle, site, host, port))


@data_app.command("check")
def data_check(
    path: Annotated[Path | None, typer.Argument(help="CSV/Parquet file, or an image dataset's root folder "
                                                     "(default: EDGEWAVE_DATA_PATH).")] = None,
) -> None:
    """Read a data file through the dataset spec (EDGEWAVE_DATASET) as a release would, and show what it holds."""
    from rich.table import Table

    from edgewave.tasks.data.images import ImageDataError, ImageSpec, load_images
    from edgewave.tasks.data.spec import SpecError, load_any_spec
    from edgewave.tasks.data.userdata import DataValidationError, load_user_data

    loaded = settings()
    path = path or loaded.data_path
    try:
        spec = load_any_spec(loaded.dataset)
        if path is None:
            raise DataValidationError("no file: give one or set EDGEWAVE_DATA_PATH")
        if isinstance(spec, ImageSpec):
            images = load_images(spec, path)
            table = Table("class", "images", "defect", title=f"{path} as {spec.name!r} ({spec.layout} layout)")
            for index, name in enumerate(images.classes):
                table.add_row(name, str(int((images.labels == index).sum())), "no" if index == 0 else "yes")
            out.print(table)
            out.print(f"{len(images.files)} images kept, {spec.image.width}x{spec.image.height} "
                      f"({spec.image.channels} channel(s)); {int(images.defective.sum())} defective "
                      f"({images.defective.mean():.2%})")
            return
        frame = load_user_data(path, spec)
    except (SpecError, DataValidationError, ImageDataError) as exc:
        refuse("refused", str(exc))
    table = Table("column", "header in the file", "kind", "unit", "min", "max", title=f"{path} as {spec.name!r}")
    for column in spec.columns:
        values = frame[column.name]
        table.add_row(column.name, column.source, column.kind, column.unit, f"{values.min():g}", f"{values.max():g}")
    out.print(table)
    positive = int(frame[spec.target.name].sum())
    out.print(f"{len(frame)} rows kept; target {spec.target.source!r}: {positive} {spec.class_labels[1]} "
              f"({positive / len(frame):.2%}); derived: {', '.join(d.name for d in spec.derived) or 'none'}")
