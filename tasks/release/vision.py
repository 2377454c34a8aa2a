"""Training, evaluation and ONNX export of the defect-detection image models.

Pure functions, as train.py and export.py are for tables: nothing here talks to MLflow or
Prefect. A CNN trained from scratch (no downloaded weights) with augmentation is chosen on
validation PR-AUC against a plain baseline; the decision threshold on P(defect) = 1 - P(good)
comes from validation; the test split only reports. The exported graph takes decoded pixels
(preprocessing inside), has two outputs — `probabilities` [batch, classes] and `embedding` —
and an int8 variant (ONNX Runtime static quantisation calibrated on training images) is kept
only where its test PR-AUC holds.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx

from edgewave.serving.bundle import Reference
from edgewave.tasks.data.images import ImageSet
from edgewave.tasks.platform.progress import report
from edgewave.tasks.platform.settings import CNN_WIDTHS
from edgewave.tasks.release.export import OPSET, ParityError, QuantizedVariant, quantized_bytes, session
from edgewave.tasks.release.train import Metrics, best_f1_threshold, evaluate

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
EMBEDDING_NAME = "embedding"
QUANTIZED_OPS = ["Conv", "MatMul", "Gemm", "Relu", "MaxPool"]
ImageFamily = Literal["cnn", "baseline"]


@dataclass(frozen=True)
class ImageSplit:
    """Train / validation / test images (uint8 NHWC at the declared size) and class indices (0: good)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    data_fingerprint: str

    def defective(self, y: np.ndarray) -> np.ndarray:
        return (y != 0).astype(np.int64)


def split_images(data: ImageSet, shares: tuple[float, float] = (0.15, 0.15)) -> ImageSplit:
    """70/15/15 per class, each image's part decided by the hash of its pixels (as split_data does
    for rows): the same image lands in the same part when a retraining adds the sites' images."""
    hashes = np.array([int.from_bytes(hashlib.blake2b(image.tobytes(), digest_size=8).digest(), "big")
                       for image in data.images], dtype=np.uint64)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for label in np.unique(data.labels):
        members = np.flatnonzero(data.labels == label)
        ranked = members[np.argsort(hashes[members], kind="stable")]
        n_val = max(1, round(shares[0] * len(ranked)))
        n_test = max(1, round(shares[1] * len(ranked)))
        parts[1].extend(ranked[:n_val])
        parts[2].extend(ranked[n_val:n_val + n_test])
        parts[0].extend(ranked[n_val + n_test:])
    train, val, test = (np.sort(np.array(p, dtype=np.int64)) for p in parts)
    if (data.labels[train] != 0).sum() < 5 or (data.labels[val] != 0).sum() < 2:
        raise ValueError(f"image training needs defective examples: {(data.labels != 0).sum()} defective images of "
                         f"{len(data.labels)}; at least 10 are needed")
    digest = hashlib.sha256()
    for index in train:
        digest.update(hashes[index].tobytes())
        digest.update(int(data.labels[index]).to_bytes(2, "big"))
    return ImageSplit(data.images[train], data.labels[train], data.images[val], data.labels[val],
                      data.images[test], data.labels[test], data.classes, digest.hexdigest()[:16])


@dataclass
class TrainedImageModel:
    """A fitted image model, its class probabilities function, and its scores."""

    family: ImageFamily
    model: Any  # vision_model.ImageModel
    predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # (class probabilities, embedding)
    params: dict[str, Any]
    metrics: Metrics  # of "defective" on the test split: reported, never used to choose
    validation_pr_auc: float = float("nan")
    started_at: float = 0.0  # when its training began and ended, epoch seconds (the MLflow run's span)
    finished_at: float = 0.0

    def defect_proba(self, images: np.ndarray) -> np.ndarray:
        return 1.0 - self.predict(images)[0][:, 0]


def _predictor(model: Any, batch_size: int = 256) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    import torch

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        model.eval()
        probabilities, embeddings = [], []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                p, e = model(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])))
                probabilities.append(p.double().numpy())
                embeddings.append(e.double().numpy())
        return np.concatenate(probabilities), np.concatenate(embeddings)
    return predict


def _finish(family: ImageFamily, model: Any, params: dict[str, Any], split: ImageSplit) -> TrainedImageModel:
    predict = _predictor(model)
    trained = TrainedImageModel(family, model, predict, params, Metrics(0, 0, 0, 0, 0.5, 0, 0))
    validation = trained.defect_proba(split.x_val)
    y_val = split.defective(split.y_val)
    threshold = best_f1_threshold(y_val, validation)
    trained.metrics = evaluate(split.defective(split.y_test), trained.defect_proba(split.x_test), threshold)
    trained.validation_pr_auc = evaluate(y_val, validation, threshold).pr_auc
    return trained


def _channel_stats(images: np.ndarray) -> tuple[Any, Any]:
    import torch

    unit = images.astype(np.float64) / 255.0
    return (torch.tensor(unit.mean(axis=(0, 1, 2)), dtype=torch.float32),
            torch.tensor(np.maximum(unit.std(axis=(0, 1, 2)), 1e-3), dtype=torch.float32))


def _unit(images: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(images).to(torch.float32).permute(0, 3, 1, 2).contiguous() / 255.0


def _augment(x: Any, generator: Any, shift: int = 3) -> Any:
    """What a line's camera varies: flips (a part may lie either way round), brightness and contrast
    within ±15 %, and a few pixels of position. Brushing runs along one axis, so no 90° turns."""
    import torch

    n = x.shape[0]
    flip_h = torch.rand(n, generator=generator) < 0.5
    flip_v = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip_h[:, None, None, None], x.flip(3), x)
    x = torch.where(flip_v[:, None, None, None], x.flip(2), x)
    gain = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.3
    offset = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.1
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.3
    x = ((x - mean) * contrast + mean) * gain + offset
    dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3)).clamp(0, 1)


def train_cnn(split: ImageSplit, seed: int = 0, epochs: int = 14, lr: float = 3e-3, batch_size: int = 64,
              widths: tuple[int, int, int, int] = CNN_WIDTHS) -> TrainedImageModel:
    """The CNN from scratch: Adam with a one-cycle schedule, cross-entropy weighted by the square
    root of inverse class frequency (defects are a few percent), augmented batches; the epoch with
    the best validation PR-AUC is kept."""
    import torch

    from edgewave.tasks.release.vision_model import DefectCNN

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    _, height, width, channels = split.x_train.shape
    classes = len(split.classes)
    model = DefectCNN(height, width, channels, classes, *_channel_stats(split.x_train), widths=widths)
    x, y = _unit(split.x_train), torch.from_numpy(split.y_train)
    counts = np.bincount(split.y_train, minlength=classes).astype(np.float64)
    weights = torch.tensor(np.sqrt(counts.sum() / (classes * np.maximum(counts, 1))), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    predict = _predictor(model)
    y_val = split.defective(split.y_val)
    best: tuple[float, dict[str, Any]] = (-1.0, {})
    started = time.monotonic()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            optimiser.zero_grad()
            logits, _ = model.classify(_augment(x[batch], generator))
            loss_fn(logits, y[batch]).backward()
            optimiser.step()
            schedule.step()
        score = evaluate(y_val, 1.0 - predict(split.x_val)[0][:, 0], 0.5).pr_auc
        if score > best[0]:
            best = (score, {k: v.clone() for k, v in model.state_dict().items()})
        report("release", "train CNN", epoch + 1, epochs,
               f"validation PR-AUC {score:.3f} ({time.monotonic() - started:.0f} s)")
    model.load_state_dict(best[1])
    params = {"family": "cnn", "estimator": "DefectCNN", "widths": list(widths), "epochs": epochs, "lr": lr,
              "batch_size": batch_size, "seed": seed, "size": [height, width], "channels": channels}
    return _finish("cnn", model, params, split)


def train_baseline(split: ImageSplit, seed: int = 0) -> TrainedImageModel:
    """The plain baseline: image statistics and an 8x8 thumbnail into a logistic regression."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from edgewave.tasks.release.vision_model import StatsBaseline

    _, height, width, channels = split.x_train.shape
    classes = len(split.classes)
    model = StatsBaseline(height, width, channels, classes, *_channel_stats(split.x_train))
    with torch.no_grad():
        raw = model.raw_features((model.preprocess(torch.from_numpy(split.x_train)) - model.mean) / model.std)
    model.feature_mean.copy_(raw.mean(dim=0))
    model.feature_std.copy_(torch.clamp(raw.std(dim=0), min=1e-6))
    features = ((raw - model.feature_mean) / model.feature_std).numpy()
    fitted = LogisticRegression(C=0.5, max_iter=2000, class_weight="balanced", random_state=seed)
    fitted.fit(features, split.y_train)
    weight, bias = fitted.coef_, fitted.intercept_
    if classes == 2:  # scikit-learn keeps one row for two classes: logits (0, w·x + b)
        weight, bias = np.vstack([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    with torch.no_grad():
        model.out.weight.copy_(torch.from_numpy(weight).to(torch.float32))
        model.out.bias.copy_(torch.from_numpy(bias).to(torch.float32))
    params = {"family": "baseline", "estimator": "StatsBaseline+LogisticRegression", "C": 0.5, "seed": seed,
              "features": int(features.shape[1])}
    return _finish("baseline", model, params, split)


def to_onnx(trained: TrainedImageModel, channels: int) -> bytes:
    """The module as an ONNX graph: uint8 `image` [batch, height, width, channels] with batch,
    height and width dynamic, `probabilities` and `embedding` out."""
    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    model = trained.model.eval()
    height, width = model.preprocess.size
    example = (torch.zeros(2, height, width, channels, dtype=torch.uint8),)
    dims = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("height", min=8, max=4096),
            2: torch.export.Dim("width", min=8, max=4096)}
    program = torch.onnx.export(model, example, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME, EMBEDDING_NAME],
                                dynamic_shapes=(dims,), opset_version=OPSET, dynamo=True, verbose=False)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    onnx.checker.check_model(proto, full_check=True)
    buffer = io.BytesIO()
    onnx.save_model(proto, buffer)
    return buffer.getvalue()


def onnx_predict(model: bytes | Any, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities, embedding) of uint8 images from a graph of this module's contract."""
    sess = session(model) if isinstance(model, bytes) else model
    probabilities, embeddings = [], []
    for start in range(0, len(images), batch_size):
        p, e = sess.run([OUTPUT_NAME, EMBEDDING_NAME], {INPUT_NAME: np.ascontiguousarray(images[start:start + batch_size])})
        probabilities.append(np.asarray(p, dtype=np.float64))
        embeddings.append(np.asarray(e, dtype=np.float64))
    return np.concatenate(probabilities), np.concatenate(embeddings)


def parity(trained: TrainedImageModel, model: bytes, images: np.ndarray, tolerance: float) -> float:
    """Max |p_torch - p_onnx| over every class of `images`; ParityError above `tolerance`."""
    diff = float(np.max(np.abs(trained.predict(images)[0] - onnx_predict(model, images)[0])))
    if not np.isfinite(diff) or diff > tolerance:
        raise ParityError(f"{trained.family}: ONNX class probabilities differ from the torch model by {diff:.3g} (max "
                          f"abs over {len(images)} held-out images), above the tolerance {tolerance:.1g}")
    return diff


def quantize_static(model: bytes, calibration: np.ndarray, images: np.ndarray, y: np.ndarray, threshold: float,
                    max_delta: float) -> QuantizedVariant:
    """int8 weights and activations (QDQ, per-channel weights) calibrated on training images; kept
    only if the test PR-AUC of "defective" drops by at most `max_delta`. ReLU and max-pooling are
    quantized too: left in float, every block dequantized and requantized its activations, and the
    int8 model ran no faster than fp32 (1.12x at widths 32-64-96-128; 1.36x with them, one image).
    The first convolution stays in float: on one to three input channels int8 saves no arithmetic,
    and its QLinearConv took 137 µs where the float one takes 26 (with it in float, 2.0x, one image
    with its decode; the site's session keeps the pool after it in float, serving.model)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    class Calibration(CalibrationDataReader):
        """Training images, a batch of 32 at a time."""

        def __init__(self) -> None:
            self.batches = iter([{INPUT_NAME: calibration[i:i + 32]} for i in range(0, len(calibration), 32)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    first_conv = next((node.name for node in onnx.load_from_string(model).graph.node if node.op_type == "Conv"), None)
    quantized = quantized_bytes(model, lambda src, dst: ort_quantize_static(
        src, dst, Calibration(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=QUANTIZED_OPS,
        nodes_to_exclude=[first_conv] if first_conv else [], calibrate_method=CalibrationMethod.MinMax))
    base, q = onnx_predict(model, images)[0], onnx_predict(quantized, images)[0]
    diff = float(np.max(np.abs(base - q)))
    delta = evaluate(y, 1 - base[:, 0], threshold).pr_auc - evaluate(y, 1 - q[:, 0], threshold).pr_auc
    kept = delta <= max_delta
    reason = f"int8 (static, calibrated on {len(calibration)} training images): PR-AUC loss {delta:.4f} " \
             f"{'within' if kept else 'outside'} bound {max_delta:g}"
    return QuantizedVariant(quantized if kept else None, diff, float(delta), kept, reason)


def image_reference(model: bytes, images: np.ndarray, max_rows: int = 500) -> Reference:
    """What a site's shipped rows are compared with: for a sample of training images, the same
    descriptors and embedding the site computes, and the defect probability the model gives."""
    from edgewave.serving.images import DESCRIPTORS, EMBEDDING_PREFIX, descriptors

    step = max(1, len(images) // max_rows)
    sample = images[::step][:max_rows]
    probabilities, embedding = onnx_predict(model, sample)
    columns = dict(zip(DESCRIPTORS, descriptors(sample).astype(np.float64).T, strict=True))
    columns |= {f"{EMBEDDING_PREFIX}{i}": embedding[:, i] for i in range(embedding.shape[1])}
    columns["probability"] = 1.0 - probabilities[:, 0]
    return Reference(rows=len(sample), columns={k: np.round(v, 5).tolist() for k, v in columns.items()})


@dataclass(frozen=True)
class ImageExport:
    family: str
    model: bytes
    parity_max_abs_diff: float
    opset: int
    quantized: QuantizedVariant
    classes: tuple[str, ...] = field(default=())


def export_image_model(trained: TrainedImageModel, split: ImageSplit, tolerance: float = 1e-4,
                       quantization_max_delta: float = 0.01, calibration_images: int = 256) -> ImageExport:
    """Export with the preprocessing inside, prove parity on the test images, try the int8 variant."""
    channels = split.x_train.shape[3]
    model = to_onnx(trained, channels)
    diff = parity(trained, model, split.x_test, tolerance)
    step = max(1, len(split.x_train) // calibration_images)
    variant = quantize_static(model, split.x_train[::step][:calibration_images], split.x_test,
                              split.defective(split.y_test), trained.metrics.threshold, quantization_max_delta)
    return ImageExport(trained.family, model, diff, OPSET, variant, split.classes)
