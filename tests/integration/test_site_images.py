"""A real site process serving an image bundle over HTTP: PNG, JPEG and base64 batches scored as the
ONNX graph scores them, every bad image refused with a 4xx naming it, descriptors and embeddings
shipped in the sample windows."""

from __future__ import annotations

import base64
import http.client
import io
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from edgewave.serving.images import DESCRIPTORS
from edgewave.tasks.data.images import ImageLimits, ImageSet, ImageShape
from edgewave.tasks.data.surfaces import DEFECTS, OK, generate
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release import vision
from edgewave.tasks.release.bundle import build_image_manifest, load_or_create_signing_key, write_bundle
from edgewave.tasks.rollout.telemetry import parse
from tests.helpers import free_port, start_site, stop, wait_for

CLASSES = (OK, *DEFECTS)
SITE = "plant-c-camera-1"
LIMITS = ImageLimits(max_bytes=20_000, max_pixels=5_000, max_batch=8)


@dataclass(frozen=True)
class ImageSite:
    port: int
    home: Path
    model: bytes
    images: np.ndarray
    threshold: float


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    pixels, labels = generate(500, seed=4, size=(32, 32), defect_rate=0.3)
    split = vision.split_images(ImageSet(pixels, np.array([CLASSES.index(c) for c in labels]), (), CLASSES))
    trained = vision.train_cnn(split, seed=0, epochs=2, widths=(6, 8, 12, 16))
    model = vision.to_onnx(trained, channels=1)
    home = tmp_path_factory.mktemp("image-site")
    manifest = build_image_manifest(
        name="surface-defects", version=1, family="cnn", model=model, int8_model=None,
        shape=ImageShape(width=32, height=32, channels=1, size_tolerance=0.5), limits=LIMITS, classes=CLASSES,
        threshold=trained.metrics.threshold, metrics=trained.metrics.as_dict(), data_fingerprint=split.data_fingerprint,
        parity_max_abs_diff=0.0, reference=vision.image_reference(model, split.x_train, 100))
    bundle = write_bundle(home / "bundles" / "v1", manifest, model, None,
                          load_or_create_signing_key(Settings(home=home).signing_key))
    port = free_port()
    process = start_site(home, port, home / "site.log", "--bundle", str(bundle), EDGEWAVE_SITE_ID=SITE,
                         EDGEWAVE_SAMPLE_FRACTION="1", EDGEWAVE_SAMPLE_WINDOW_SECONDS="1")
    yield ImageSite(port, home, model, split.x_test, trained.metrics.threshold)
    stop(process)


def _encode(pixels: np.ndarray, form: str = "PNG", mode: str | None = None) -> bytes:
    image = Image.fromarray(pixels[:, :, 0])
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, form)
    return buffer.getvalue()


def _post(site: ImageSite, body: bytes, content_type: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=30)
    try:
        connection.request("POST", "/v1/predict", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _expected(site: ImageSite, pixels: np.ndarray) -> np.ndarray:
    return vision.onnx_predict(site.model, pixels[None])[0][0]


def test_a_png_and_a_jpeg_get_the_graphs_defect_probability_label_and_class_scores(site: ImageSite) -> None:
    image = site.images[0]
    status, body = _post(site, _encode(image), "image/png")
    assert status == 200, body
    assert body["model"] == "surface-defects" and body["model_version"] == 1
    (answer,) = body["predictions"]
    expected = _expected(site, image)
    assert list(answer["scores"]) == list(CLASSES)
    np.testing.assert_allclose(list(answer["scores"].values()), expected, atol=1e-6)
    assert answer["defect_probability"] == pytest.approx(1 - expected[0], abs=1e-6)
    worst = CLASSES[1 + int(np.argmax(expected[1:]))]
    assert answer["label"] == (worst if answer["defect_probability"] >= site.threshold else OK)

    jpeg = _encode(image, "JPEG")
    status, body = _post(site, jpeg, "image/jpeg")
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)))[:, :, None]
    assert status == 200
    np.testing.assert_allclose(list(body["predictions"][0]["scores"].values()), _expected(site, decoded), atol=1e-6)


def test_a_batch_keeps_its_order_across_image_sizes(site: ImageSite) -> None:
    larger = np.asarray(Image.fromarray(site.images[3][:, :, 0]).resize((40, 36)))[:, :, None]
    batch = [site.images[0], larger, site.images[1], site.images[2]]
    encoded = [base64.b64encode(_encode(p)).decode() for p in batch]
    status, body = _post(site, json.dumps({"images": encoded}).encode(), "application/json")
    assert status == 200, body
    for answer, pixels in zip(body["predictions"], batch, strict=True):
        np.testing.assert_allclose(list(answer["scores"].values()), _expected(site, pixels), atol=1e-6)


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buffer, "PNG")  # 9 Mpx of zeros: a few kB on the wire
    return buffer.getvalue()


@pytest.mark.parametrize(("body", "content_type", "status", "message"), [
    (lambda s: _bomb(), "image/png", 413, r"image: 3000x3000 pixels, more than the 5000 an image may have"),
    (lambda s: b"\x89PNG" + bytes(25_000), "image/png", 413, r"image: 25004 bytes, more than the 20000"),
    (lambda s: _encode(s.images[0], mode="RGB"), "image/png", 422, r"image: mode RGB; the model takes 1 channel"),
    (lambda s: _encode(s.images[0])[:200], "image/png", 422, r"image: the image does not decode"),
    (lambda s: b"GIF89a not a png", "image/png", 415, r"image: not a PNG or JPEG image"),
    (lambda s: _encode(np.zeros((64, 64, 1), np.uint8)), "image/png", 422,
     r"image: width 64 \(trained at 32\), height 64 \(trained at 32\), beyond the size tolerance 0\.5"),
    (lambda s: _encode(s.images[0]), "text/plain", 415, r"content-type must be application/json or image/png or "
                                                        r"image/jpeg, got text/plain"),
    (lambda s: json.dumps({"images": ["aGVsbG8=", "@@@"]}).encode(), "application/json", 415,
     r"images\[0\]: not a PNG or JPEG image"),
    (lambda s: json.dumps({"images": [base64.b64encode(_encode(s.images[0])).decode(), "@@@"]}).encode(),
     "application/json", 422, r"images\[1\]: not valid base64"),
    (lambda s: json.dumps({"images": ["x"] * 9}).encode(), "application/json", 413,
     r"images: batch of 9 images exceeds the maximum of 8"),
    (lambda s: json.dumps({"instances": []}).encode(), "application/json", 400,
     r"expected an object with 'images' only, got \['instances'\]"),
])
def test_a_bad_image_request_gets_a_4xx_naming_what_was_wrong(site: ImageSite, body, content_type: str, status: int,
                                                               message: str) -> None:
    got, answer = _post(site, body(site), content_type)
    assert got == status, answer
    assert __import__("re").search(message, answer["error"]), answer["error"]


def test_the_site_says_what_it_takes_and_ships_descriptors_and_embeddings(site: ImageSite) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{site.port}/openapi.json", timeout=10) as response:
        described = json.loads(response.read())["paths"]["/v1/predict"]["post"]
    assert {"image/png", "image/jpeg", "application/json"} <= set(described["requestBody"]["content"])
    assert "32x32 pixels, 1 channel(s)" in described["description"]

    _post(site, _encode(site.images[5]), "image/png")
    with urllib.request.urlopen(f"http://127.0.0.1:{site.port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert any(f'edgewave_predictions_total{{label="{c}"}}' in metrics for c in CLASSES)
    reading = parse(metrics)  # what the canary analysis reads: a defect counts as a positive prediction
    by_label = {s.labels["label"]: s.value for f in text_string_to_metric_families(metrics) for s in f.samples
                if s.name == "edgewave_predictions_total"}
    assert reading.failures_predicted == sum(n for label, n in by_label.items() if label != OK)
    assert reading.rows == sum(by_label.values()) > 0

    samples = site.home / "sites" / SITE / "samples"
    wait_for(lambda: any(samples.glob("*.parquet")), 30, "a sample window")
    table = pq.read_table(sorted(samples.glob("*.parquet"))[0]).to_pandas()
    assert set(DESCRIPTORS) | {"embedding_0", "embedding_31", "probability", "model_version"} <= set(table.columns)
    assert table["brightness"].between(0, 1).all() and (table["sharpness"] > 0).all()
    kept = table["image"].dropna()  # every image fits the default budget here: people can label them
    assert len(kept) > 0 and all(Image.open(io.BytesIO(data)).format in ("PNG", "JPEG") for data in kept)


def test_generated_camera_traffic_is_scored_and_follows_a_scenario_change(site: ImageSite) -> None:
    from edgewave.tasks.data.images import ImageSpec
    from edgewave.tasks.platform.fleetfile import Site
    from edgewave.tasks.sim.traffic import Parts, Traffic

    spec = ImageSpec(kind="images", name="parts", generator="surfaces", classes=list(CLASSES),
                     image=ImageShape(width=32, height=32, channels=1))
    camera = Site(id=SITE, port=site.port)
    source = Parts(spec)
    with pytest.raises(ValueError, match=r"no image scenario 'fog'; known: \['defocus', 'lighting'"):
        source.scenario("fog")
    traffic = Traffic([camera], source, rate_per_site=40, rows_per_request=2)
    with traffic:
        wait_for(lambda: traffic.statuses[SITE][200] >= 10, 60, "ten answered batches")
        traffic.set_scenario(SITE, source.scenario("lighting"))
        before = traffic.statuses[SITE][200]
        wait_for(lambda: traffic.statuses[SITE][200] >= before + 10, 60, "ten more after the lamp changed")
    assert set(traffic.statuses[SITE]) == {200}, traffic.statuses


def test_inspectors_labels_of_the_parts_sent_come_back_for_retraining(site: ImageSite, tmp_path) -> None:
    import yaml

    from edgewave.tasks.platform.fleetfile import Site
    from edgewave.tasks.platform.monitoring import MonitoringStore
    from edgewave.tasks.release import image_steps
    from edgewave.tasks.sim.traffic import Parts, Traffic

    spec_file = tmp_path / "camera.yaml"
    spec_file.write_text(yaml.safe_dump({"kind": "images", "name": "parts", "generator": "surfaces",
                                         "classes": list(CLASSES), "image": {"width": 32, "height": 32}}))
    settings = Settings(home=tmp_path / "home", dataset=spec_file, train_images=200)
    store = MonitoringStore.of(settings)
    traffic = Traffic([Site(id=SITE, port=site.port)], Parts(image_steps.image_spec(settings)), rate_per_site=40,
                      feedback_store=store, feedback_seconds=0.5)
    with traffic:
        wait_for(lambda: traffic.feedback_rows[SITE] >= 20, 60, "twenty labelled parts in the store")
    labelled = store.read_feedback(1000)
    assert set(labelled.columns) == {"image", "label"} and set(labelled["label"]) <= set(CLASSES)
    assert len(labelled) == traffic.feedback_rows[SITE]

    base = image_steps.load_training_images.fn(settings, seed=1)
    retraining = image_steps.load_training_images.fn(settings, seed=1, with_feedback=True)
    unique = labelled[~labelled["image"].map(bytes).duplicated()]  # a part inspected twice is one example
    assert len(retraining.files) == len(base.files) + len(unique) and len(base.files) == 200
    assert list(retraining.labels[200:]) == [CLASSES.index(c) for c in unique["label"]]
    capped = image_steps.load_training_images.fn(settings.model_copy(update={"feedback_images_per_site": 5}), seed=1,
                                                 with_feedback=True)
    assert len(capped.files) <= 205


def test_a_site_told_to_serve_int8_serves_the_bundles_int8_variant(site: ImageSite, tmp_path) -> None:
    pixels, labels = generate(300, seed=8, size=(32, 32), defect_rate=0.3)
    split = vision.split_images(ImageSet(pixels, np.array([CLASSES.index(c) for c in labels]), (), CLASSES))
    trained = vision.train_cnn(split, seed=0, epochs=1, widths=(6, 8, 12, 16))
    fp32 = vision.to_onnx(trained, channels=1)
    int8 = vision.quantize_static(fp32, split.x_train[:64], split.x_test, split.defective(split.y_test),
                                  trained.metrics.threshold, max_delta=1.0).model
    assert int8 is not None
    manifest = build_image_manifest(
        name="surface-defects", version=2, family="cnn", model=fp32, int8_model=int8,
        shape=ImageShape(width=32, height=32, channels=1, size_tolerance=0.5), limits=LIMITS, classes=CLASSES,
        threshold=0.5, metrics=trained.metrics.as_dict(), data_fingerprint=split.data_fingerprint,
        parity_max_abs_diff=0.0, reference=vision.image_reference(fp32, split.x_train, 50))
    bundle = write_bundle(tmp_path / "v2", manifest, fp32, int8,
                          load_or_create_signing_key(Settings(home=site.home).signing_key))
    image = split.x_test[0]
    for serve_int8, graph in (("true", int8), ("false", fp32)):
        port = free_port()
        process = start_site(site.home, port, tmp_path / f"site-{serve_int8}.log", "--bundle", str(bundle),
                             EDGEWAVE_SERVE_INT8=serve_int8, EDGEWAVE_SITE_ID=f"camera-{serve_int8}")
        try:
            status, body = _post(ImageSite(port, site.home, graph, split.x_test, 0.5), _encode(image), "image/png")
        finally:
            stop(process)
        assert status == 200 and body["model_version"] == 2
        np.testing.assert_allclose(list(body["predictions"][0]["scores"].values()),
                                   vision.onnx_predict(graph, image[None])[0][0], atol=1e-6)
    # the two graphs answer this image differently, so the answers above tell which one was served
    assert np.abs(vision.onnx_predict(int8, image[None])[0] - vision.onnx_predict(fp32, image[None])[0]).max() > 1e-5
