from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgewave.tasks.release.export import INPUT_NAME, OUTPUT_NAME, ParityError, onnx_proba, parity, session
from edgewave.tasks.release.train import Split, TrainedModel


@pytest.mark.parametrize("family", ["sklearn", "torch"])
def test_onnx_reproduces_the_source_model_within_1e4(family: str, trained: dict[str, TrainedModel],
                                                    exported: dict, split: Split) -> None:
    source = trained[family].predict_proba(split.x_test)
    onnx_p = onnx_proba(exported[family].model, split.x_test)
    diff = float(np.max(np.abs(source - onnx_p)))
    assert diff <= 1e-4
    assert exported[family].parity_max_abs_diff == pytest.approx(diff, abs=1e-12)
    onnx.checker.check_model(onnx.load_from_string(exported[family].model))


@pytest.mark.parametrize("family", ["sklearn", "torch"])
@pytest.mark.parametrize("batch", [1, 7, 513])
def test_graph_takes_any_batch_size_and_returns_two_probabilities(family: str, batch: int, exported: dict,
                                                                  split: Split) -> None:
    sess = session(exported[family].model)
    assert [i.name for i in sess.get_inputs()] == [INPUT_NAME]
    x = np.resize(split.x_test, (batch, split.x_test.shape[1])).astype(np.float32)
    (out,) = sess.run([OUTPUT_NAME], {INPUT_NAME: x})
    assert out.shape == (batch, 2)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_parity_failure_reports_the_difference(trained: dict[str, TrainedModel], exported: dict, split: Split) -> None:
    with pytest.raises(ParityError, match=r"torch: ONNX probabilities differ from the source model by [0-9.e-]+"):
        parity(trained["torch"], exported["sklearn"].model, split.x_test, tolerance=1e-4)


def test_int8_variant_is_measured_for_the_mlp_and_not_applicable_to_trees(exported: dict, split: Split) -> None:
    mlp = exported["torch"].quantized
    assert mlp.max_abs_diff is not None and mlp.max_abs_diff > 0
    assert mlp.pr_auc_delta is not None
    assert mlp.kept == (mlp.pr_auc_delta <= 0.01)
    if mlp.kept:
        assert len(onnx_proba(mlp.model, split.x_test)) == len(split.x_test)
    trees = exported["sklearn"].quantized
    assert not trees.kept and trees.model is None and "tree ensemble" in trees.reason


def test_both_families_learn_the_failure_class(trained: dict[str, TrainedModel]) -> None:
    for model in trained.values():
        assert model.metrics.pr_auc > 0.5
        assert model.metrics.recall > 0.4
