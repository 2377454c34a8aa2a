"""ONNX export, structural check, parity against the source model, and an int8 variant.

Every exported graph has the same contract, which the edge relies on: one float32 input
`features` of shape [batch, n_features] and an output `probabilities` of shape [batch, 2]
(columns: ok, failure).
"""

from __future__ import annotations

import io
import logging
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import onnxruntime as ort

from edgewave.tasks.release.features import Features
from edgewave.tasks.release.train import TrainedModel, evaluate

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
OPSET = 18


class ParityError(RuntimeError):
    """The ONNX graph does not reproduce the source model within tolerance."""


@dataclass(frozen=True)
class QuantizedVariant:
    model: bytes | None
    max_abs_diff: float | None
    pr_auc_delta: float | None
    kept: bool
    reason: str


@dataclass(frozen=True)
class Export:
    family: str
    model: bytes
    parity_max_abs_diff: float
    opset: int
    quantized: QuantizedVariant


def _float32_at_most(values: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each float64: for float32 inputs, `x <= t` and
    `x <= _float32_at_most(t)` agree, so the graph splits rows exactly where the model does."""
    rounded = values.astype(np.float32)
    above = rounded.astype(np.float64) > values
    rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
    return rounded


def _export_hist_gradient_boosting(model, n_features: int) -> onnx.ModelProto:
    """A binary HistGradientBoostingClassifier as one TreeEnsembleRegressor (the raw score:
    baseline + every tree's leaf value) followed by a sigmoid.

    skl2onnx 1.20 cannot convert it under scikit-learn 1.9 (it writes a Python bool into an int
    attribute), and the graph is small enough to write here from the fitted predictors.
    """
    from onnx import TensorProto, helper

    if model.n_trees_per_iteration_ != 1:
        raise ValueError("only binary HistGradientBoostingClassifier models are exported")
    attrs: dict[str, Any] = {k: [] for k in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes", "nodes_values",
        "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
        "target_treeids", "target_nodeids", "target_ids", "target_weights")}
    for tree_id, (predictor,) in enumerate(model._predictors):
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            raise ValueError("categorical splits are not exported; give the model numeric columns")
        thresholds = _float32_at_most(nodes["num_threshold"])
        for node_id, node in enumerate(nodes):
            leaf = bool(node["is_leaf"])
            attrs["nodes_treeids"].append(tree_id)
            attrs["nodes_nodeids"].append(node_id)
            attrs["nodes_featureids"].append(0 if leaf else int(node["feature_idx"]))
            attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            attrs["nodes_values"].append(0.0 if leaf else float(thresholds[node_id]))
            attrs["nodes_truenodeids"].append(0 if leaf else int(node["left"]))
            attrs["nodes_falsenodeids"].append(0 if leaf else int(node["right"]))
            attrs["nodes_missing_value_tracks_true"].append(0 if leaf else int(node["missing_go_to_left"]))
            if leaf:
                attrs["target_treeids"].append(tree_id)
                attrs["target_nodeids"].append(node_id)
                attrs["target_ids"].append(0)
                attrs["target_weights"].append(float(node["value"]))
    baseline = float(np.asarray(model._baseline_prediction).ravel()[0])
    nodes = [
        helper.make_node("TreeEnsembleRegressor", [INPUT_NAME], ["raw"], domain="ai.onnx.ml", n_targets=1,
                         aggregate_function="SUM", post_transform="NONE", base_values=[baseline], **attrs),
        helper.make_node("Sigmoid", ["raw"], ["failure"]),
        helper.make_node("Sub", ["one", "failure"], ["ok"]),
        helper.make_node("Concat", ["ok", "failure"], [OUTPUT_NAME], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "hist_gradient_boosting",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, 2])],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", 3)])


def _export_sklearn(trained: TrainedModel, n_features: int) -> onnx.ModelProto:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    if type(trained.model).__name__ == "HistGradientBoostingClassifier":
        return _export_hist_gradient_boosting(trained.model, n_features)
    model = cast(onnx.ModelProto, to_onnx(
        trained.model,
        initial_types=cast(Any, [(INPUT_NAME, FloatTensorType([None, n_features]))]),
        options={id(trained.model): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
        final_types=None,
    ))
    # skl2onnx names the outputs "label" and "probabilities"; keep only what the edge reads.
    names = [o.name for o in model.graph.output]
    if OUTPUT_NAME not in names:
        raise RuntimeError(f"skl2onnx produced outputs {names}, expected {OUTPUT_NAME!r}")
    return model


def _export_torch(trained: TrainedModel, n_features: int) -> onnx.ModelProto:
    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" noise
    example = (torch.zeros(4, n_features, dtype=torch.float32),)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        trained.model,
        example,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch},),
        opset_version=OPSET,
        dynamo=True,
        verbose=False,
    )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto


def _export_ensemble(trained: TrainedModel, n_features: int) -> onnx.ModelProto:
    """A blend (train.Blend) as one graph: every member's graph side by side on the same input,
    each under its own name prefix, and the weighted sum of their probabilities."""
    from onnx import TensorProto, compose, helper

    nodes, initializers, functions, weighted = [], [], [], []
    opsets: dict[str, int] = {}
    ir_version = 0
    for index, (member, weight) in enumerate(zip(trained.model.members, trained.model.weights, strict=True)):
        prefix = f"m{index}_"
        graph_of = compose.add_prefix(to_onnx(member, n_features), prefix)
        ir_version = max(ir_version, graph_of.ir_version)
        for opset in graph_of.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
        functions.extend(f for f in graph_of.functions if f.name not in {g.name for g in functions})
        nodes.append(helper.make_node("Identity", [INPUT_NAME], [prefix + INPUT_NAME]))
        nodes.extend(graph_of.graph.node)
        initializers.extend(graph_of.graph.initializer)
        initializers.append(helper.make_tensor(f"{prefix}weight", TensorProto.FLOAT, [], [weight]))
        nodes.append(helper.make_node("Mul", [prefix + OUTPUT_NAME, f"{prefix}weight"], [f"{prefix}weighted"]))
        weighted.append(f"{prefix}weighted")
    nodes.append(helper.make_node("Sum", weighted, [OUTPUT_NAME]))
    graph = helper.make_graph(
        nodes, "blend",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, 2])], initializer=initializers)
    return helper.make_model(graph, ir_version=ir_version, functions=functions,
                             opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])


# Graphs already exported in this process, by fitted model: a blend's members are mostly the
# release's other candidates, exported just before it (the MLP's export alone takes seconds).
_EXPORTED: weakref.WeakKeyDictionary[Any, tuple[int, bytes]] = weakref.WeakKeyDictionary()


def to_onnx(trained: TrainedModel, n_features: int) -> onnx.ModelProto:
    """Export with a dynamic batch axis and check the graph with `onnx.checker`."""
    reusable = trained.family in ("sklearn", "torch")
    if reusable and (known := _EXPORTED.get(trained.model)) and known[0] == n_features:
        return onnx.load_from_string(known[1])
    exporters = {"sklearn": _export_sklearn, "torch": _export_torch, "ensemble": _export_ensemble}
    model = exporters[trained.family](trained, n_features)
    onnx.checker.check_model(model, full_check=True)
    if reusable:
        _EXPORTED[trained.model] = (n_features, model.SerializeToString())
    return model


def session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def onnx_proba(model: bytes | ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """Failure probability per row from an ONNX graph of the edgewave contract."""
    sess = model if isinstance(model, ort.InferenceSession) else session(model)
    (out,) = sess.run([OUTPUT_NAME], {INPUT_NAME: np.asarray(x, dtype=np.float32)})
    return np.asarray(out, dtype=np.float64)[:, 1]


def parity(trained: TrainedModel, model: bytes, x: np.ndarray, tolerance: float) -> float:
    """Max |p_source - p_onnx| on `x`; raises ParityError above `tolerance`."""
    diff = float(np.max(np.abs(trained.predict_proba(x) - onnx_proba(model, x))))
    if not np.isfinite(diff) or diff > tolerance:
        raise ParityError(
            f"{trained.family}: ONNX probabilities differ from the source model by {diff:.3g} "
            f"(max abs over {len(x)} held-out rows), above the tolerance {tolerance:.1g}"
        )
    return diff


def quantized_bytes(model: bytes, quantizer: Callable[[Path, Path], object]) -> bytes:
    """`model` through one of ONNX Runtime's quantisers, which read and write files; the hint they log
    to the root logger about pre-processing is kept off the terminal."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        src.write_bytes(model)
        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR
        try:
            quantizer(src, dst)
        finally:
            root.setLevel(level)
        return dst.read_bytes()


def quantize(model: bytes, x: np.ndarray, y: np.ndarray, threshold: float, max_delta: float) -> QuantizedVariant:
    """Dynamic int8 quantisation, kept only if it loses at most `max_delta` PR-AUC.

    The largest probability change is recorded too; int8 weights move individual
    probabilities by a few percent, so ranking quality is the bound that matters.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic


    proto = onnx.load_from_string(model)
    if not any(node.op_type in {"MatMul", "Gemm"} for node in proto.graph.node):
        return QuantizedVariant(None, None, None, False, "no MatMul/Gemm to quantise (tree ensemble)")
    quantized = quantized_bytes(model, lambda src, dst: quantize_dynamic(src, dst, weight_type=QuantType.QInt8))
    base, q = onnx_proba(model, x), onnx_proba(quantized, x)
    diff = float(np.max(np.abs(base - q)))
    delta = evaluate(y, base, threshold).pr_auc - evaluate(y, q, threshold).pr_auc
    kept = delta <= max_delta
    reason = f"PR-AUC loss {delta:.4f} {'within' if kept else 'outside'} bound {max_delta:g}"
    return QuantizedVariant(quantized if kept else None, diff, float(delta), kept, reason)


def export_model(trained: TrainedModel, x_test: np.ndarray, y_test: np.ndarray,
                 tolerance: float = 1e-4, quantization_max_delta: float = 0.01,
                 features: Features | None = None) -> Export:
    """Export (derived features computed in the graph, in front of the model), check, prove parity
    on held-out raw rows, and try the int8 variant."""
    features = features or Features(tuple(f"x{j}" for j in range(x_test.shape[1])))
    proto = features.in_front_of(to_onnx(trained, len(features.names)))
    buffer = io.BytesIO()
    onnx.save_model(proto, buffer)
    model = buffer.getvalue()
    diff = parity(trained, model, x_test, tolerance)
    variant = quantize(model, x_test, y_test, trained.metrics.threshold, quantization_max_delta)
    return Export(trained.family, model, diff, OPSET, variant)
