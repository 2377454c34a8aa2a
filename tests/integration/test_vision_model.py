"""The image models through torch and ONNX Runtime: preprocessing inside the graph, parity of the
class probabilities ≤ 1e-4 on any image size, an embedding output, and the int8 variant's bound."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgewave.tasks.data.images import ImageSet
from edgewave.tasks.data.surfaces import DEFECTS, OK, generate
from edgewave.tasks.release import vision

CLASSES = (OK, *DEFECTS)


@pytest.fixture(scope="module")
def split() -> vision.ImageSplit:
    images, labels = generate(700, seed=3, size=(32, 32), defect_rate=0.25)
    return vision.split_images(ImageSet(images, np.array([CLASSES.index(c) for c in labels]),
                                        tuple(map(str, range(len(labels)))), CLASSES))


@pytest.fixture(scope="module")
def cnn(split: vision.ImageSplit) -> vision.TrainedImageModel:
    return vision.train_cnn(split, seed=0, epochs=3, widths=(6, 8, 12, 16))


def test_the_split_follows_the_pixels_and_keeps_every_class_in_each_part(split: vision.ImageSplit) -> None:
    for y in (split.y_train, split.y_val, split.y_test):
        assert set(np.unique(y)) == set(range(len(CLASSES)))
    again = vision.split_images(ImageSet(np.concatenate([split.x_test, split.x_val, split.x_train]),
                                         np.concatenate([split.y_test, split.y_val, split.y_train]), (), CLASSES))
    assert again.data_fingerprint == split.data_fingerprint, "the order of the files does not move an image's part"
    assert np.array_equal(np.sort(again.y_test), np.sort(split.y_test))


def test_the_exported_graph_takes_decoded_pixels_of_any_size_and_matches_torch(
        split: vision.ImageSplit, cnn: vision.TrainedImageModel) -> None:
    exported = vision.export_image_model(cnn, split, tolerance=1e-4, calibration_images=64)
    assert exported.parity_max_abs_diff <= 1e-4
    graph = onnx.load_from_string(exported.model).graph
    (image,) = graph.input
    assert image.name == "image" and image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim][3] == 1
    assert [o.name for o in graph.output] == ["probabilities", "embedding"]

    # a camera of another resolution: the graph resizes as the torch module does
    from PIL import Image
    larger = np.stack([np.asarray(Image.fromarray(i[:, :, 0]).resize((45, 40)))[:, :, None] for i in split.x_test[:20]])
    for images in (larger, split.x_test[:1]):
        probabilities, embedding = vision.onnx_predict(exported.model, images)
        expected, expected_embedding = cnn.predict(images)
        assert probabilities.shape == (len(images), len(CLASSES))
        assert np.abs(probabilities - expected).max() <= 1e-4
        assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
        assert embedding.shape == (len(images), 32) and np.abs(embedding - expected_embedding).max() < 1e-3


def test_int8_is_measured_against_fp32_and_kept_only_within_its_bound(
        split: vision.ImageSplit, cnn: vision.TrainedImageModel) -> None:
    fp32 = vision.to_onnx(cnn, channels=1)
    y = split.defective(split.y_test)
    kept = vision.quantize_static(fp32, split.x_train[:64], split.x_test, y, cnn.metrics.threshold, max_delta=1.0)
    assert kept.kept and kept.model is not None and kept.pr_auc_delta is not None
    assert len(kept.model) < len(fp32), "int8 weights are smaller"
    nodes = onnx.load_from_string(kept.model).graph.node
    dequantized = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}
    convs = [n for n in nodes if n.op_type == "Conv"]
    assert [n.input[1] in dequantized for n in convs] == [False, True, True, True], \
        "the first convolution (one input channel) keeps float weights, the others are int8"

    # the site's session pools in float where ONNX Runtime would pool uint8: the same numbers
    import onnxruntime as ort

    from edgewave.serving.model import site_session
    plain = ort.InferenceSession(kept.model, providers=["CPUExecutionProvider"])
    site, default = (vision.onnx_predict(s, split.x_test)[0] for s in (site_session(kept.model), plain))
    assert np.abs(site - default).max() <= 1e-6
    strict = vision.quantize_static(fp32, split.x_train[:64], split.x_test, y, cnn.metrics.threshold,
                                    max_delta=kept.pr_auc_delta - 1e-6)
    assert not strict.kept and strict.model is None and "outside bound" in strict.reason


def test_the_baseline_exports_through_the_same_contract(split: vision.ImageSplit) -> None:
    baseline = vision.train_baseline(split)
    assert 0 < baseline.validation_pr_auc <= 1
    model = vision.to_onnx(baseline, channels=1)
    assert vision.parity(baseline, model, split.x_test, 1e-4) <= 1e-4
    with pytest.raises(vision.ParityError, match=r"baseline: ONNX class probabilities differ .* tolerance"):
        vision.parity(baseline, model, split.x_test, tolerance=-1.0)  # any difference is above it
