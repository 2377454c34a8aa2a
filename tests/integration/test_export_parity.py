from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgewave.tasks.release.export import INPUT_NAME, OUTPUT_NAME, ParityError, onnx_proba, parity, session
from edgewave.tasks.release.train import Split, TrainedModel


@pytest.mark.parametrize("family", ["sklearn", "torch", "ensemble"])
def test_onnx_reproduces_the_source_model_within_1e4(family: str, trained: dict[str, TrainedModel],
                                                    exported: dict, split: Split) -> None:
    source = trained[family].predict_proba(split.x_test)
    onnx_p = onnx_proba(exported[family].model, split.x_test)
    diff = float(np.max(np.abs(source - onnx_p)))
    assert diff <= 1e-4
    assert exported[family].parity_max_abs_diff == pytest.approx(diff, abs=1e-12)
    onnx.checker.check_model(onnx.load_from_string(exported[family].model))


@pytest.mark.parametrize("family", ["sklearn", "torch", "ensemble"])
@pytest.mark.parametrize("batch", [1, 7, 513])
def test_graph_takes_any_batch_size_and_returns_two_probabilities(family: str, batch: int, exported: dict,
                                                                  split: Split) -> None:
    sess = session(exported[family].model)
    assert [i.name for i in sess.get_inputs()] == [INPUT_NAME]
    x = np.resize(split.x_test, (batch, split.x_test.shape[1])).astype(np.float32)
    (out,) = sess.run([OUTPUT_NAME], {INPUT_NAME: x})
    assert out.shape == (batch, 2)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_a_blend_is_one_graph_giving_the_weighted_sum_of_its_members_graphs(exported: dict, split: Split) -> None:
    """Members side by side under their own prefixes (the MLP's int8 variant is still measured)."""
    blended = onnx_proba(exported["ensemble"].model, split.x_test)
    members = 0.7 * onnx_proba(exported["sklearn"].model, split.x_test) + 0.3 * onnx_proba(exported["torch"].model,
                                                                                          split.x_test)
    np.testing.assert_allclose(blended, members, atol=1e-6)
    graph = onnx.load_from_string(exported["ensemble"].model).graph
    assert [i.name for i in graph.input] == [INPUT_NAME] and [o.name for o in graph.output] == [OUTPUT_NAME]
    assert {"TreeEnsembleRegressor", "Sum"} <= {n.op_type for n in graph.node} | {
        n.op_type for f in onnx.load_from_string(exported["ensemble"].model).functions for n in f.node}
    assert exported["ensemble"].quantized.pr_auc_delta is not None, "the MLP inside is quantised and measured"


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


def test_every_estimator_of_the_search_exports_with_parity(split: Split) -> None:
    """Each kind of trial the search may pick (small versions of them) survives export within 1e-4."""
    from sklearn import ensemble

    from edgewave.tasks.release.export import export_model
    from edgewave.tasks.release.train import TRIALS, _finish

    small = {"n_estimators": 20, "max_iter": 20}
    for estimator, hyper, weighting in {(e, tuple(sorted(h.items())), w) for e, h, w in TRIALS}:
        params = {k: small.get(k, v) for k, v in hyper}
        model = getattr(ensemble, estimator)(**params, random_state=0)
        weights = None if weighting is None else np.where(split.y_train == 1, 10.0, 1.0)
        model.fit(split.features.augment(split.x_train), split.y_train, sample_weight=weights)
        trained = _finish("sklearn", model, lambda x, m=model: m.predict_proba(split.features.augment(x))[:, 1],
                          {}, split)
        exported = export_model(trained, split.x_test, split.y_test, features=split.features)
        assert exported.parity_max_abs_diff <= 1e-4, (estimator, weighting, exported.parity_max_abs_diff)


def test_histogram_boosting_splits_rows_on_its_thresholds_as_scikit_learn_does() -> None:
    """Rows whose values sit exactly on a split threshold, or one float32 step either side of it,
    land on the same side in the graph as in scikit-learn."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from edgewave.tasks.release.export import _export_hist_gradient_boosting

    rng = np.random.default_rng(0)
    x = rng.normal(50, 10, size=(4000, 3)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] - 0.2 * x[:, 2] + rng.normal(0, 4, 4000) > 70).astype(int)
    model = HistGradientBoostingClassifier(max_iter=30).fit(x, y)
    nodes = np.concatenate([p.nodes[~p.nodes["is_leaf"].astype(bool)] for (p,) in model._predictors])
    assert (np.float32(nodes["num_threshold"]) > nodes["num_threshold"]).any(), "no threshold rounds up: test is moot"
    rows = []
    for node in nodes:  # 40 rows per value, so that some of them reach the node
        at = np.float32(node["num_threshold"])
        for value in (at, np.nextafter(at, np.float32(-np.inf)), np.nextafter(at, np.float32(np.inf))):
            block = x[:40].copy()
            block[:, node["feature_idx"]] = value
            rows.append(block)
    rows = np.concatenate(rows)
    graph = _export_hist_gradient_boosting(model, 3).SerializeToString()
    assert float(np.max(np.abs(onnx_proba(graph, rows) - model.predict_proba(rows)[:, 1]))) <= 1e-5


def test_a_model_exported_once_is_not_exported_again_for_a_blend(trained: dict[str, TrainedModel], exported: dict,
                                                                 split: Split, monkeypatch: pytest.MonkeyPatch) -> None:
    """The blend's members were the release's candidates a moment before: their graphs are reused."""
    from edgewave.tasks.release import export

    def exported_again(*_):
        raise AssertionError("the MLP was exported a second time")

    monkeypatch.setattr(export, "_export_torch", exported_again)
    model = export.to_onnx(trained["torch"], len(split.features.names))
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    fresh = export.to_onnx(trained["ensemble"], len(split.features.names))  # its MLP from the same reuse
    assert {n.op_type for n in fresh.graph.node} >= {"Sum", "Mul"}
