"""Derived-feature expressions: the grammar refuses what it must, and numpy and ONNX Runtime agree."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from edgewave.tasks.data.expressions import Expression, ExpressionError

COLUMNS = {"torque_nm", "rotational_speed_rpm", "air_temperature_k", "process_temperature_k", "tool_wear_min"}


@pytest.mark.parametrize(("text", "why"), [
    ("__import__('os').system('x')", "Call is not allowed"),
    ("torque_nm ** 2", "Pow is not"),
    ("torque_nm.real", "Attribute is not allowed"),
    ("spindle_vibration * 2", "unknown column 'spindle_vibration'"),
    ("torque_nm if torque_nm else 1", "IfExp is not allowed"),
    ("'text'", "is not a number"),
    ("torque_nm *", "not an arithmetic expression"),
    ("True + torque_nm", "is not a number"),
])
def test_anything_outside_the_grammar_is_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(ExpressionError, match=why):
        Expression.parse(text, COLUMNS)


def onnx_value(expression: Expression, values: dict[str, np.ndarray]) -> np.ndarray:
    names = sorted(values)
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in names]
    nodes, initializers = expression.onnx_nodes("out", {n: n for n in names}, "e")
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 1])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["out"], {n: values[n].reshape(-1, 1) for n in names})[0].ravel()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.5, 5000, allow_nan=False, width=32), min_size=3, max_size=3), st.integers(1, 40))
def test_numpy_and_onnx_runtime_agree_on_a_physics_feature(constants: list[float], rows: int) -> None:
    rng = np.random.default_rng(rows)
    values = {"torque_nm": rng.uniform(5, 70, rows).astype(np.float32),
              "rotational_speed_rpm": rng.uniform(1100, 2800, rows).astype(np.float32),
              "tool_wear_min": rng.uniform(0, 250, rows).astype(np.float32)}
    a, b, c = constants
    text = f"-(torque_nm * rotational_speed_rpm * {a} / {b}) + tool_wear_min * torque_nm / ({c} - -1)"
    expression = Expression.parse(text, COLUMNS)
    assert expression.columns == ["rotational_speed_rpm", "tool_wear_min", "torque_nm"]
    # exactly: a tree compares derived values with float32 thresholds, so one ulp apart can flip a split
    np.testing.assert_array_equal(onnx_value(expression, values), expression.evaluate(values))
