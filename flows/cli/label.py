"""`edgewave label export` and `edgewave label import`: people label what an image model doubts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgewave.flows.cli.console import console, refuse, settings

label_app = typer.Typer(no_args_is_help=True, help="Label the images sites shipped back (an image model's doubts).")


def _image_spec(loaded):
    from edgewave.tasks.data.images import ImageSpec
    from edgewave.tasks.data.spec import load_any_spec

    spec = load_any_spec(loaded.dataset)
    if not isinstance(spec, ImageSpec):
        refuse("refused", f"{loaded.dataset} is a table spec: labelling is for image models (kind: images)")
    return spec


@label_app.command("export")
def export(
    site: Annotated[str, typer.Option(help="The site whose shipped images to label.")],
    out: Annotated[Path | None, typer.Option(help="Folder to write (default ./labels-<site>).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most images, the most doubtful first.")] = 200,
) -> None:
    """Write a site's shipped images, nearest their model's threshold first, and a labels.csv to fill in."""
    from edgewave.tasks.drift.labelling import LABELS, export_doubtful
    from edgewave.tasks.platform.monitoring import MonitoringStore
    from edgewave.tasks.release.registry import registry_state

    loaded = settings()
    spec = _image_spec(loaded)
    thresholds = {v["version"]: float(v["tags"]["threshold"]) for v in registry_state(loaded)["versions"]
                  if "threshold" in v["tags"]}
    exported = export_doubtful(MonitoringStore.of(loaded), site, out or Path(f"labels-{site}"), thresholds, limit)
    classes = ", ".join((spec.ok_class, *spec.defect_classes))
    console.print(f"{exported.images} images of {site} (from {exported.windows} sample windows), most doubtful first, "
                  f"in {exported.folder}. Fill the `label` column of {exported.folder / LABELS} with one of: {classes} "
                  f"(leave it empty to skip an image), then: edgewave label import {exported.folder} --site {site}")


@label_app.command("import")
def import_(
    folder: Annotated[Path, typer.Argument(help="A folder written by `edgewave label export`, its labels.csv filled in.")],
    site: Annotated[str, typer.Option(help="The site the images came from.")],
) -> None:
    """Check every labelled row and store the labelled images as the site's feedback for retraining."""
    from edgewave.tasks.drift.labelling import import_labels
    from edgewave.tasks.platform.monitoring import MonitoringStore

    loaded = settings()
    stored = import_labels(MonitoringStore.of(loaded), site, folder, _image_spec(loaded))
    console.print(f"{stored} labelled images of {site} stored as feedback: the next retraining "
                  "(`edgewave drift retrain`, or a drift event) trains on them")
