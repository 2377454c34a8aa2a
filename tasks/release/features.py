"""What a model sees: the spec's raw columns, then its derived features.

Models train on raw + derived columns; the exported ONNX graph takes only the raw columns and
computes the derived ones itself, in a prefix merged in front of the model, with the same
float32 arithmetic as training (tasks/release/expressions.py), so a tree's thresholds split
the same rows in ONNX Runtime as in scikit-learn and a site is sent raw sensor values only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from edgewave.tasks.data.expressions import Expression
from edgewave.tasks.data.spec import DatasetSpec

INPUT_NAME = "features"  # what every bundle's graph takes: [batch, raw columns]
PREFIX = "edgewave_pre_"
AUGMENTED = f"{PREFIX}features_with_derived"
MODEL_INPUT = "edgewave_model_input"


@dataclass(frozen=True)
class Features:
    raw: tuple[str, ...]
    derived: tuple[tuple[str, Expression], ...] = ()

    @classmethod
    def of(cls, spec: DatasetSpec) -> Features:
        return cls(spec.features, tuple(spec.expressions()))

    @property
    def names(self) -> tuple[str, ...]:
        """Every column the model itself takes, raw first."""
        return (*self.raw, *(name for name, _ in self.derived))

    def augment(self, x: np.ndarray) -> np.ndarray:
        """Raw rows [n, raw] → model rows [n, raw + derived], float32."""
        x = np.asarray(x, dtype=np.float32)
        if not self.derived:
            return x
        columns = {name: x[:, j] for j, name in enumerate(self.raw)}
        derived = [expression.evaluate(columns) for _, expression in self.derived]
        return np.column_stack([x, *derived]).astype(np.float32)

    def in_front_of(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """`model` (input `features` = raw + derived) behind a prefix that takes raw columns only."""
        if not self.derived:
            return model
        from onnx import TensorProto, compose, helper

        nodes, initializers, tensors = [], [helper.make_tensor(f"{PREFIX}axis", TensorProto.INT64, [1], [1])], {}
        used = sorted({c for _, e in self.derived for c in e.columns})
        for j, name in enumerate(self.raw):
            if name in used:
                bounds = [f"{PREFIX}start_{j}", f"{PREFIX}end_{j}"]
                initializers += [helper.make_tensor(bounds[0], TensorProto.INT64, [1], [j]),
                                 helper.make_tensor(bounds[1], TensorProto.INT64, [1], [j + 1])]
                tensors[name] = f"{PREFIX}column_{name}"
                nodes.append(helper.make_node("Slice", [INPUT_NAME, *bounds, f"{PREFIX}axis"], [tensors[name]]))
        outputs = []
        for index, (name, expression) in enumerate(self.derived):
            more, constants = expression.onnx_nodes(f"{PREFIX}derived_{name}", tensors, f"{PREFIX}{index}")
            nodes, initializers = nodes + more, initializers + constants
            outputs.append(f"{PREFIX}derived_{name}")
        nodes.append(helper.make_node("Concat", [INPUT_NAME, *outputs], [AUGMENTED], axis=1))
        graph = helper.make_graph(
            nodes, "edgewave_derived_features",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, len(self.raw)])],
            [helper.make_tensor_value_info(AUGMENTED, TensorProto.FLOAT, [None, len(self.names)])], initializers)
        prefix = helper.make_model(graph, ir_version=model.ir_version,
                                   opset_imports=[o for o in model.opset_import if o.domain in ("", "ai.onnx")])
        inner = onnx.ModelProto()
        inner.CopyFrom(model)
        for value in inner.graph.input:
            if value.name == INPUT_NAME:
                value.name = MODEL_INPUT
        for node in inner.graph.node:
            node.input[:] = [MODEL_INPUT if name == INPUT_NAME else name for name in node.input]
        merged = compose.merge_models(prefix, inner, io_map=[(AUGMENTED, MODEL_INPUT)])
        versions: dict[str, int] = {}
        for opset in merged.opset_import:  # both sides import the default domain: once is right
            versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
        del merged.opset_import[:]
        merged.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in versions.items())
        onnx.checker.check_model(merged, full_check=True)
        return merged
