"""An image dataset spec (`kind: images`) and the loader of the layouts plants already have.

A camera line declares once what it sends: image size and channels, the class names and which
one is the good part (every other class is a defect type), where the labels come from (one
folder per class, the MVTec AD layout `train/good`, `test/good`, `test/<defect type>`, or a
labels CSV), and the limits a site holds a request to. Training, the ONNX graph's preprocessing,
the bundle's input schema and the site's decoding all follow it. A bad image is refused at load
naming its file, before anything is trained on it: a truncated JPEG or a stray RGBA screenshot
in a class folder is a data problem a person fixes, not something to train around.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from edgewave.serving.errors import Actionable
from edgewave.tasks.data.spec import Identifier, _Strict

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MODES = {1: "L", 3: "RGB"}
MAX_LISTED = 10  # problems named in one error; the rest are counted


class ImageDataError(ValueError, Actionable):
    """Images that cannot be trained on; the message names each file and what is wrong with it."""


class ImageShape(_Strict):
    width: int = Field(ge=8, le=4096)
    height: int = Field(ge=8, le=4096)
    channels: Literal[1, 3] = Field(default=1, description="1: grayscale (mode L), 3: colour (mode RGB).")
    size_tolerance: float = Field(
        default=0.5, gt=0, le=4,
        description="An image whose width or height differs from the declared one by more than this share is refused "
                    "(another camera or a wrong crop); within it, the image is resized, at load and in the model.")

    @property
    def mode(self) -> str:
        return MODES[self.channels]


class ImageLimits(_Strict):
    """What a site accepts in one request: a decompression bomb or a 40 MB upload is refused before decoding."""

    max_bytes: int = Field(default=4_000_000, ge=1_000, description="Largest encoded image a site decodes.")
    max_pixels: int = Field(default=4_000_000, ge=64, description="Largest width x height a site decodes.")
    max_batch: int = Field(default=32, ge=1, le=1024, description="Most images in one batch request.")


class ImageSpec(_Strict):
    kind: Literal["images"]
    name: str = Field(min_length=1)
    description: str = ""
    generator: Literal["surfaces"] | None = Field(
        default=None, description="The built-in image generator (tasks/data/surfaces.py) that makes data of this shape "
                                  "when no EDGEWAVE_DATA_PATH is set.")
    image: ImageShape
    classes: list[Identifier] = Field(min_length=2, description="Class names; the model scores each.")
    ok_class: Identifier = Field(default="good", description="The class of a good part; every other class is a defect.")
    layout: Literal["folders", "mvtec", "csv"] = Field(
        default="folders", description="folders: <root>/<class>/*.png; mvtec: <root>/train/good, <root>/test/good, "
                                       "<root>/test/<defect type>; csv: <root>/<labels_csv> lists `file,label`.")
    labels_csv: str = Field(default="labels.csv", description="For layout csv: the labels file, relative to the root.")
    limits: ImageLimits = ImageLimits()

    @model_validator(mode="after")
    def _classes(self) -> ImageSpec:
        repeated = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if repeated:
            raise ValueError(f"classes: names must be unique: {repeated}")
        if self.ok_class not in self.classes:
            raise ValueError(f"ok_class: {self.ok_class!r} is not one of the classes {self.classes}")
        if self.layout == "mvtec" and self.ok_class != "good":
            raise ValueError("ok_class: the MVTec layout calls good parts 'good'")
        return self

    @property
    def defect_classes(self) -> tuple[str, ...]:
        return tuple(c for c in self.classes if c != self.ok_class)


@dataclass(frozen=True)
class ImageSet:
    """Decoded images at the declared size, their class indices (into `classes`) and their files."""

    images: np.ndarray  # uint8 [n, height, width, channels]
    labels: np.ndarray  # int64 [n]
    files: tuple[str, ...]  # relative to the data root
    classes: tuple[str, ...]

    @property
    def defective(self) -> np.ndarray:
        """1 where the part is defective (any class but the first, the good one), else 0."""
        return (self.labels != 0).astype(np.int64)


def labelled_files(spec: ImageSpec, root: Path) -> list[tuple[Path, str]]:
    """(file, class) for every image the layout names under `root`; refused naming the folder or
    row when a class has no images or a label is not a class."""
    if not root.is_dir():
        raise ImageDataError(f"{root}: no such folder (EDGEWAVE_DATA_PATH of an image dataset is its root folder)")
    if spec.layout == "csv":
        found = _from_csv(spec, root)
    else:
        folders = ({c: [root / c] for c in spec.classes} if spec.layout == "folders" else
                   {c: [root / "train" / "good", root / "test" / "good"] if c == spec.ok_class else [root / "test" / c]
                    for c in spec.classes})
        stray = _stray_folders(spec, root)
        if stray:
            raise ImageDataError(f"{root}: folder(s) {stray} are not classes of the spec {spec.classes}: add them to "
                                 "`classes` or move them out")
        found = [(path, c) for c, places in folders.items() for place in places if place.is_dir()
                 for path in sorted(place.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]
    counts = {c: 0 for c in spec.classes}
    for _, c in found:
        counts[c] += 1
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        where = {"folders": "<root>/<class>/", "mvtec": "<root>/test/<class>/ (good: train/good, test/good)",
                 "csv": spec.labels_csv}[spec.layout]
        raise ImageDataError(f"{root}: class(es) {empty} have no images (looked in {where}); every class of the spec "
                             "needs examples")
    return found


def _stray_folders(spec: ImageSpec, root: Path) -> list[str]:
    if spec.layout == "folders":
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and p.name not in spec.classes)
    test = root / "test"
    return sorted(f"test/{p.name}" for p in test.iterdir() if p.is_dir() and p.name not in spec.classes) \
        if test.is_dir() else []


def _from_csv(spec: ImageSpec, root: Path) -> list[tuple[Path, str]]:
    path = root / spec.labels_csv
    if not path.is_file():
        raise ImageDataError(f"{path}: no labels file (layout csv reads `file,label` rows from it)")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
            raise ImageDataError(f"{path}: the header must name the columns `file` and `label`, "
                                 f"found {reader.fieldnames}")
        found = []
        for line, row in enumerate(reader, start=2):
            label = (row["label"] or "").strip()
            if label not in spec.classes:
                raise ImageDataError(f"{path}:{line}: label {label!r} is not one of the classes {spec.classes}")
            found.append((root / (row["file"] or "").strip(), label))
    return found


def read_image(path: Path | str, spec: ImageSpec, data: bytes | None = None) -> np.ndarray:
    """One image (the file at `path`, or its encoded `data` named `path`) as uint8 [height, width,
    channels] at the declared size; ImageDataError says why not."""
    import io

    from PIL import Image, UnidentifiedImageError

    shape = spec.image
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as image:
            if image.width * image.height > spec.limits.max_pixels:
                raise ImageDataError(f"{path}: {image.width}x{image.height} pixels, more than limits.max_pixels "
                                     f"({spec.limits.max_pixels})")
            image.load()  # a truncated file fails here, not later in training
            if image.mode != shape.mode:
                raise ImageDataError(f"{path}: mode {image.mode}, the spec declares {shape.channels} channel(s) "
                                     f"(mode {shape.mode}): convert the images")
            far = [f"{axis} {got} (declared {want})" for axis, got, want in
                   (("width", image.width, shape.width), ("height", image.height, shape.height))
                   if abs(got - want) > shape.size_tolerance * want]
            if far:
                raise ImageDataError(f"{path}: {', '.join(far)}: beyond image.size_tolerance "
                                     f"({shape.size_tolerance:g}); another camera or a wrong crop?")
            if image.size != (shape.width, shape.height):
                image = image.resize((shape.width, shape.height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageDataError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageDataError(f"{path}: not an image Pillow can read (PNG, JPEG or BMP)") from None
    except OSError as exc:  # "image file is truncated", a broken deflate stream
        raise ImageDataError(f"{path}: unreadable image: {exc}") from None
    return pixels.reshape(shape.height, shape.width, shape.channels)


def labelled_images(spec: ImageSpec, frame: Any, where: str) -> ImageSet:
    """Images people labelled (a frame of encoded `image` bytes and their class `label`, as sites'
    feedback comes back through the monitoring store), decoded and checked like a dataset's files;
    a row is named `where[i]` in an error."""
    classes = (spec.ok_class, *spec.defect_classes)
    unknown = sorted(set(frame["label"]) - set(classes))
    if unknown:
        raise ImageDataError(f"{where}: label(s) {unknown} are not classes of the spec {list(classes)}")
    images = [read_image(f"{where}[{i}]", spec, bytes(data)) for i, data in enumerate(frame["image"])]
    return ImageSet(np.stack(images) if images else np.zeros((0, spec.image.height, spec.image.width,
                                                               spec.image.channels), np.uint8),
                    np.array([classes.index(c) for c in frame["label"]], dtype=np.int64),
                    tuple(f"{where}[{i}]" for i in range(len(images))), classes)


def combined(first: ImageSet, second: ImageSet) -> ImageSet:
    """Two image sets of the same classes as one (a dataset and the sites' labelled images)."""
    if first.classes != second.classes:
        raise ValueError(f"cannot combine images of classes {first.classes} and {second.classes}")
    return ImageSet(np.concatenate([first.images, second.images]), np.concatenate([first.labels, second.labels]),
                    first.files + second.files, first.classes)


def load_images(spec: ImageSpec, root: Path) -> ImageSet:
    """Every image of the layout, decoded and checked; one ImageDataError lists the bad files (the
    first ten and how many more), so a person fixes a folder in one pass."""
    found = labelled_files(spec, root)
    images: list[np.ndarray] = []
    problems: list[str] = []
    for path, _ in found:
        try:
            images.append(read_image(path, spec))
        except ImageDataError as exc:
            problems.append(str(exc))
    if problems:
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise ImageDataError(f"{len(problems)} of {len(found)} images refused{more}:\n  "
                             + "\n  ".join(problems[:MAX_LISTED]))
    index = {c: i for i, c in enumerate([spec.ok_class, *spec.defect_classes])}
    return ImageSet(np.stack(images), np.array([index[c] for _, c in found], dtype=np.int64),
                    tuple(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p, _ in found),
                    (spec.ok_class, *spec.defect_classes))
