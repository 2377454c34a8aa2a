"""Derived features as arithmetic over a data set's columns, in a small safe grammar.

`power_kw = torque_nm * rotational_speed_rpm * 2 * 3.14159 / 60 / 1000`: column names, numbers,
+ - * /, unary minus and parentheses; nothing else (no calls, attributes or indexing, and no
`eval`: the text is parsed with `ast` and only those node types are accepted). One parsed
expression is evaluated two ways that must agree: on numpy arrays for training, and as ONNX
nodes in front of the model, so an edge site still receives only raw sensor values.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import numpy as np

from edgewave.serving.errors import Actionable

_OPS = {ast.Add: "Add", ast.Sub: "Sub", ast.Mult: "Mul", ast.Div: "Div"}


class ExpressionError(ValueError, Actionable):
    """An expression outside the grammar, or naming an unknown column; says which and where."""


@dataclass(frozen=True)
class Expression:
    text: str
    tree: ast.expr

    @classmethod
    def parse(cls, text: str, columns: set[str] | None = None) -> Expression:
        """Parse and check: only the grammar above, and (given `columns`) only known column names."""
        try:
            tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as exc:
            raise ExpressionError(f"{text!r}: not an arithmetic expression ({exc.msg})") from None
        for node in ast.walk(tree):
            if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Load, *_OPS, ast.USub, ast.UAdd)):
                if isinstance(node, ast.BinOp) and type(node.op) not in _OPS:
                    raise ExpressionError(f"{text!r}: operator {type(node.op).__name__} is not + - * /")
                if isinstance(node, ast.Constant) and (isinstance(node.value, bool)
                                                       or not isinstance(node.value, (int, float))):
                    raise ExpressionError(f"{text!r}: {node.value!r} is not a number")
                if isinstance(node, ast.Name) and columns is not None and node.id not in columns:
                    raise ExpressionError(f"{text!r}: unknown column {node.id!r} (columns: {sorted(columns)})")
                continue
            raise ExpressionError(f"{text!r}: {type(node).__name__} is not allowed (only columns, numbers, + - * / "
                                  "and parentheses)")
        return cls(text, tree)

    @property
    def columns(self) -> list[str]:
        return sorted({node.id for node in ast.walk(self.tree) if isinstance(node, ast.Name)})

    def evaluate(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """The expression on float32 column arrays (float32 throughout, as the ONNX graph computes)."""
        def run(node: ast.expr) -> np.ndarray:
            if isinstance(node, ast.Name):
                return np.asarray(values[node.id], dtype=np.float32)
            if isinstance(node, ast.Constant):  # the parser admits numbers only
                return np.asarray(node.value, dtype=np.float32)
            if isinstance(node, ast.UnaryOp):
                operand = run(node.operand)
                return -operand if isinstance(node.op, ast.USub) else operand
            assert isinstance(node, ast.BinOp)  # the parser admits nothing else
            left, right = run(node.left), run(node.right)
            op = _OPS[type(node.op)]
            result = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](left, right)
            return np.asarray(result, dtype=np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.broadcast_to(run(self.tree), next(iter(values.values())).shape).astype(np.float32)

    def onnx_nodes(self, output: str, column_tensor: dict[str, str], prefix: str) -> tuple[list, list]:
        """(nodes, initializers) computing the expression into tensor `output` ([batch, 1], float32) from
        the named [batch, 1] column tensors; names start with `prefix` so several expressions coexist."""
        from onnx import helper, numpy_helper

        nodes, initializers, counter = [], [], iter(range(1_000_000))

        def emit(node: ast.expr, name: str | None = None) -> str:
            name = name or f"{prefix}_{next(counter)}"
            if isinstance(node, ast.Name):
                nodes.append(helper.make_node("Identity", [column_tensor[node.id]], [name]))
            elif isinstance(node, ast.Constant):
                initializers.append(numpy_helper.from_array(np.array([[node.value]], dtype=np.float32), name))
            elif isinstance(node, ast.UnaryOp):
                inner = emit(node.operand)
                nodes.append(helper.make_node("Neg" if isinstance(node.op, ast.USub) else "Identity", [inner], [name]))
            else:
                assert isinstance(node, ast.BinOp)  # the parser admits nothing else
                left, right = emit(node.left), emit(node.right)
                nodes.append(helper.make_node(_OPS[type(node.op)], [left, right], [name]))
            return name

        emit(self.tree, output)
        return nodes, initializers
