"""What a site accepts from a verified bundle's model: float32 rounding at the edges of [0, 1]
is served clipped, a model that really leaves [0, 1] is refused before it serves anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgewave.serving.bundle import load_trusted_keys
from edgewave.serving.model import ModelLoadError, load_model
from edgewave.tasks.data.ai4i import FEATURES, TARGET, generate
from edgewave.tasks.release.bundle import build_manifest, load_or_create_signing_key, write_bundle


def constant_model(positive: float) -> bytes:
    """An ONNX graph that answers (1 - p, p) for every row, whatever the features."""
    width = len(FEATURES)
    graph = helper.make_graph(
        [helper.make_node("Slice", ["features", "starts", "ends", "axes"], ["two"]),
         helper.make_node("Mul", ["two", "zero"], ["zeros"]),
         helper.make_node("Add", ["zeros", "answer"], ["probabilities"])],
        "constant", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
         helper.make_tensor("ends", TensorProto.INT64, [1], [2]),
         helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
         helper.make_tensor("zero", TensorProto.FLOAT, [1, 2], [0.0, 0.0]),
         helper.make_tensor("answer", TensorProto.FLOAT, [1, 2], [1.0 - positive, positive])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def bundle_answering(tmp_path: Path, positive: float) -> Path:
    key = load_or_create_signing_key(tmp_path / "keys" / "signing.key")
    model = constant_model(positive)
    manifest = build_manifest(
        name="machine-failure", version=1, family="sklearn", model=model, int8_model=None,
        train_frame=generate(300, 1)[list(FEATURES) + [TARGET]], threshold=0.5, metrics={"pr_auc": 0.9},
        data_fingerprint="ab" * 32, parity_max_abs_diff=1e-7, reference_rows=100,
    )
    return write_bundle(tmp_path / "bundle", manifest, model, None, key)


def test_a_tree_ensembles_rounding_past_one_is_served_clipped(tmp_path: Path) -> None:
    folder = bundle_answering(tmp_path, np.float32(1.0000013))  # what a random forest's ONNX graph gave
    model = load_model(folder, load_trusted_keys(tmp_path / "keys"))
    proba = model.failure_probability(np.zeros((3, len(FEATURES)), dtype=np.float32))
    assert proba.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("positive", [1.5, float("nan")])
def test_a_model_outside_zero_one_is_refused_naming_what_it_gave(tmp_path: Path, positive: float) -> None:
    folder = bundle_answering(tmp_path, positive)
    with pytest.raises(ModelLoadError, match=r"outside \[0, 1\] or not finite \(min"):
        load_model(folder, load_trusted_keys(tmp_path / "keys"))


def test_a_site_runs_its_model_on_the_threads_it_is_given(tmp_path: Path) -> None:
    folder = bundle_answering(tmp_path, 0.25)
    for threads in (1, 2):
        model = load_model(folder, load_trusted_keys(tmp_path / "keys"), threads=threads)
        assert model.session.get_session_options().intra_op_num_threads == threads
