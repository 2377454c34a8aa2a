"""Image datasets: the layouts plants have load through a spec; every bad image is refused naming its file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from edgewave.tasks.data.images import ImageDataError, ImageSpec, load_images
from edgewave.tasks.data.spec import SpecError, load_any_spec, load_spec
from edgewave.tasks.data.surfaces import generate

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["good", "scratch", "pit"]


def _spec(tmp_path: Path, **changes) -> ImageSpec:
    document = {"kind": "images", "name": "parts", "image": {"width": 32, "height": 32, "channels": 1},
                "classes": CLASSES, **changes}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(document))
    spec = load_any_spec(path)
    assert isinstance(spec, ImageSpec)
    return spec


def _parts(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, list[str]]:
    return generate(n, seed, size=(size, size), defect_rate=0.5, defects=("scratch", "pit"))


def _write(folder: Path, name: str, pixels: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.fromarray(pixels[:, :, 0]).save(path)
    return path


def test_a_folder_per_class_dataset_loads_with_the_good_class_first(tmp_path: Path) -> None:
    images, labels = _parts(30, 1)
    for i, (image, label) in enumerate(zip(images, labels)):
        _write(tmp_path / "data" / label, f"{i:03d}.png", image)
    spec = _spec(tmp_path, classes=["scratch", "good", "pit"])
    loaded = load_images(spec, tmp_path / "data")
    assert loaded.classes == ("good", "scratch", "pit")
    assert loaded.images.shape == (30, 32, 32, 1) and loaded.images.dtype == np.uint8
    by_file = {f: loaded.classes[int(c)] for f, c in zip(loaded.files, loaded.labels)}
    assert by_file == {f"{label}/{i:03d}.png": label for i, label in enumerate(labels)}
    assert list(loaded.defective) == [int(loaded.classes[c] != "good") for c in loaded.labels]
    first = loaded.files.index(f"{labels[0]}/000.png")
    assert np.array_equal(loaded.images[first], images[0]), "pixels as written (PNG is lossless)"


def test_the_mvtec_layout_loads_train_and_test_good_and_each_defect_folder(tmp_path: Path) -> None:
    images, labels = _parts(24, 2)
    root = tmp_path / "casting"
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / ("train/good" if label == "good" and i % 2 else f"test/{label}")
        _write(folder, f"{i:03d}.png", image)
    (root / "ground_truth" / "pit").mkdir(parents=True)  # MVTec's masks: not a class, not read
    loaded = load_images(_spec(tmp_path, layout="mvtec"), root)
    assert len(loaded.files) == 24
    assert {f.split("/")[0] for f in loaded.files} == {"train", "test"}
    assert sorted(loaded.classes[c] for c in loaded.labels) == sorted(labels)


def test_a_labels_csv_names_each_file_and_its_class(tmp_path: Path) -> None:
    images, labels = _parts(12, 3)
    rows = ["file,label"]
    for i, (image, label) in enumerate(zip(images, labels)):
        _write(tmp_path / "data" / "all", f"{i}.png", image)
        rows.append(f"all/{i}.png,{label}")
    (tmp_path / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    loaded = load_images(_spec(tmp_path, layout="csv"), tmp_path / "data")
    assert [loaded.classes[c] for c in loaded.labels] == labels

    (tmp_path / "data" / "labels.csv").write_text("file,label\nall/0.png,dent\n")
    with pytest.raises(ImageDataError, match=r"labels\.csv:2: label 'dent' is not one of the classes"):
        load_images(_spec(tmp_path, layout="csv"), tmp_path / "data")


def _good_folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    images, _ = _parts(3, 4)
    for label in CLASSES:
        for i, image in enumerate(images):
            _write(root / label, f"{i}.png", image)
    return root


@pytest.mark.parametrize(("name", "write", "expected"), [
    ("truncated.png", lambda p, png: p.write_bytes(png[: len(png) // 2]), r"truncated\.png: unreadable image"),
    ("notes.png", lambda p, png: p.write_text("not an image"), r"notes\.png: not an image Pillow can read"),
    ("rgba.png", lambda p, png: Image.new("RGBA", (32, 32)).save(p), r"rgba\.png: mode RGBA, the spec declares 1 "
                                                                      r"channel\(s\) \(mode L\): convert"),
    ("huge.png", lambda p, png: Image.new("L", (32, 64)).save(p), r"huge\.png: height 64 \(declared 32\): beyond "
                                                                   r"image\.size_tolerance"),
])
def test_a_bad_image_is_refused_at_load_naming_its_file(tmp_path: Path, name: str, write, expected: str) -> None:
    root = _good_folder(tmp_path)
    png = (root / "pit" / "0.png").read_bytes()
    write(root / "scratch" / name, png)
    with pytest.raises(ImageDataError, match=r"1 of 10 images refused:\n  .*" + expected):
        load_images(_spec(tmp_path), root)


def test_an_image_near_the_declared_size_is_resized_and_many_bad_ones_are_counted(tmp_path: Path) -> None:
    root = _good_folder(tmp_path)
    Image.new("L", (36, 30), 200).save(root / "good" / "near.png")
    loaded = load_images(_spec(tmp_path), root)
    assert loaded.images.shape == (10, 32, 32, 1)
    assert loaded.images[loaded.files.index("good/near.png")].min() == 200
    for i in range(12):
        (root / "good" / f"bad{i:02d}.png").write_text("x")
    with pytest.raises(ImageDataError, match=r"12 of 22 images refused \(and 2 more\)"):
        load_images(_spec(tmp_path), root)


def test_an_empty_class_a_stray_folder_and_a_missing_root_are_named(tmp_path: Path) -> None:
    root = _good_folder(tmp_path)
    for path in (root / "pit").iterdir():
        path.unlink()
    with pytest.raises(ImageDataError, match=r"class\(es\) \['pit'\] have no images"):
        load_images(_spec(tmp_path), root)
    (root / "pit" / "0.png").write_bytes((root / "good" / "0.png").read_bytes())
    (root / "dent").mkdir()
    with pytest.raises(ImageDataError, match=r"folder\(s\) \['dent'\] are not classes of the spec"):
        load_images(_spec(tmp_path), root)
    with pytest.raises(ImageDataError, match=r"nowhere: no such folder"):
        load_images(_spec(tmp_path), tmp_path / "nowhere")


def test_image_spec_errors_name_the_field_and_a_table_step_refuses_an_image_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"ok_class: 'ok' is not one of the classes"):
        _spec(tmp_path, ok_class="ok")
    with pytest.raises(SpecError, match=r"image\.channels: Input should be 1 or 3"):
        _spec(tmp_path, image={"width": 32, "height": 32, "channels": 4})
    with pytest.raises(SpecError, match=r"classes: names must be unique"):
        _spec(tmp_path, classes=["good", "pit", "pit"])
    with pytest.raises(SpecError, match=r"an image dataset spec \(kind: images\); this step takes a table"):
        load_spec(ROOT / "deployments" / "inspection-dataset.yaml")
    shipped = load_any_spec(ROOT / "deployments" / "inspection-dataset.yaml")
    assert isinstance(shipped, ImageSpec) and shipped.defect_classes == ("scratch", "pit", "crack", "stain")


def test_labelled_images_from_sites_are_checked_like_a_datasets_files(tmp_path: Path) -> None:
    import io

    import pandas as pd

    from edgewave.tasks.data.images import combined, labelled_images

    spec = _spec(tmp_path)
    images, _ = _parts(3, 6)
    files = []
    for pixels in images:
        buffer = io.BytesIO()
        Image.fromarray(pixels[:, :, 0]).save(buffer, "PNG")
        files.append(buffer.getvalue())
    labelled = labelled_images(spec, pd.DataFrame({"image": files, "label": ["pit", "good", "pit"]}), "feedback")
    assert list(labelled.labels) == [2, 0, 2] and np.array_equal(labelled.images, images)
    assert len(combined(labelled, labelled).files) == 6
    with pytest.raises(ImageDataError, match=r"feedback: label\(s\) \['dent'\] are not classes"):
        labelled_images(spec, pd.DataFrame({"image": files[:1], "label": ["dent"]}), "feedback")
    with pytest.raises(ImageDataError, match=r"feedback\[1\]: not an image Pillow can read"):
        labelled_images(spec, pd.DataFrame({"image": [files[0], b"junk"], "label": ["pit", "pit"]}), "feedback")
