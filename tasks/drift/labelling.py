"""Labelling what the model doubts: the images a site shipped back, out to a folder a person works in,
and their verdicts back into the monitoring store as feedback a retraining reads.

A site keeps, per sample window, the images nearest its decision threshold (serving/sampler.py).
`export_doubtful` writes those of one site, most doubtful first, as files beside a `labels.csv`
with an empty `label` column; a person fills it in (any spreadsheet does); `import_labels`
checks every row (the file exists and decodes as the spec says, the label is a class) and writes
the labelled images as one feedback file. Nothing is written when one row is wrong.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from edgewave.tasks.data.images import ImageDataError, ImageSpec, read_image
from edgewave.tasks.platform.monitoring import MonitoringStore, SiteLedger

LABELS = "labels.csv"
COLUMNS = ("sample_id", "file", "defect_probability", "model_version", "label")


@dataclass(frozen=True)
class Exported:
    folder: Path
    images: int
    windows: int


def export_doubtful(store: MonitoringStore, site: str, folder: Path, thresholds: dict[int, float],
                    limit: int = 200) -> Exported:
    """The site's shipped images, nearest their version's threshold (`thresholds` by model version)
    first, at most `limit`, as files in `folder` with a `labels.csv` to fill in."""
    from PIL import Image

    windows = store.new_windows(site, SiteLedger())
    frame, _ = store.read_windows(windows)
    if frame.empty or "image" not in frame.columns:
        raise ImageDataError(f"{store.link(site)}: no images shipped by {site} yet (an image model's site keeps "
                             "those nearest its threshold in each sample window)")
    kept = frame[frame["image"].notna()].copy()
    kept["doubt"] = [abs(p - thresholds.get(int(v), 0.5)) for p, v in zip(kept["probability"], kept["model_version"],
                                                                          strict=True)]
    kept = kept.sort_values("doubt", kind="stable").head(limit)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for sample_id, data, probability, version in zip(kept["sample_id"], kept["image"], kept["probability"],
                                                     kept["model_version"], strict=True):
        suffix = {"PNG": ".png", "JPEG": ".jpg"}.get(str(Image.open(io.BytesIO(data)).format), ".img")
        name = f"{sample_id}{suffix}"
        (folder / name).write_bytes(bytes(data))
        rows.append({"sample_id": sample_id, "file": name, "defect_probability": f"{probability:.4f}",
                     "model_version": int(version), "label": ""})
    with (folder / LABELS).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return Exported(folder, len(rows), len(windows.files))


def import_labels(store: MonitoringStore, site: str, folder: Path, spec: ImageSpec) -> int:
    """The labelled rows of `folder/labels.csv` (an empty label: not labelled yet) as the site's
    feedback; returns how many. ImageDataError names the row of a missing file, an image that does
    not decode as the spec says, or a label that is no class."""
    path = folder / LABELS
    if not path.is_file():
        raise ImageDataError(f"{path}: no labels file (edgewave label export writes one)")
    classes = (spec.ok_class, *spec.defect_classes)
    files, labels = [], []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
            raise ImageDataError(f"{path}: the header must name `file` and `label`, found {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            label = (row["label"] or "").strip()
            if not label:
                continue
            if label not in classes:
                raise ImageDataError(f"{path}:{line}: label {label!r} is not one of the classes {list(classes)}")
            image = folder / (row["file"] or "").strip()
            if not image.is_file():
                raise ImageDataError(f"{path}:{line}: {image.name}: no such file in {folder}")
            data = image.read_bytes()
            read_image(f"{path}:{line}: {image.name}", spec, data)  # decodes as the spec says, or the row is named
            files.append(data)
            labels.append(label)
    if not files:
        return 0
    store.write_feedback(site, pd.DataFrame({"image": files, "label": labels}))
    return len(files)
