"""Conditions (`when`) and computed outputs (`mean(ridge.variable, trees.variable)`): a small, safe expression
language over tensors, parsed once at load with Python's `ast` and evaluated with numpy.

Allowed: tensor references (`$input.<name>`, `<step>.<output>`, `$item`; names must be identifiers here),
numbers, strings, True/False, `+ - * /`, comparisons, `and or not`, indexing with constants (`x[0]`, `x[:, 1]`),
and the functions below. Nothing else parses: no attributes of Python objects, no other calls.
"""

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

INPUT, ITEM = "_input_", "_item_"


class ExpressionError(ValueError):
    pass


def _many(reduce: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """One argument: over all its elements; several: element by element."""

    def function(*arrays: np.ndarray) -> np.ndarray:
        if len(arrays) == 1:
            return reduce(arrays[0])
        return reduce(np.stack(np.broadcast_arrays(*arrays)), axis=0)

    return function


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "any": lambda x: np.any(x),
    "all": lambda x: np.all(x),
    "len": lambda x: np.int64(np.shape(x)[0] if np.ndim(x) else 1),
    "abs": np.abs,
    "mean": _many(np.mean),
    "sum": _many(np.sum),
    "min": _many(np.min),
    "max": _many(np.max),
    "argmax": lambda x: np.argmax(x, axis=-1),
}
_COMPARE = {
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
}
_BINARY = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.true_divide}


@dataclass(frozen=True)
class Expression:
    text: str
    tree: ast.Expression
    references: frozenset[str]  # "$input.x", "step.out", "$item"

    def evaluate(self, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        """The value, given every referenced tensor by reference; BYTES elements compare as text."""
        try:
            return np.asarray(_evaluate(self.tree.body, tensors))
        except ExpressionError:
            raise
        except Exception as error:  # numpy's own complaint (shapes that do not broadcast, ...) names the problem
            raise ExpressionError(f"'{self.text}': {type(error).__name__}: {error}") from None

    def condition(self, tensors: Mapping[str, np.ndarray]) -> bool:
        value = self.evaluate(tensors)
        if value.size != 1:
            raise ExpressionError(
                f"condition '{self.text}' gives {value.size} values, not one: wrap it in any(...) or all(...)"
            )
        return bool(value.reshape(()))


def parse(text: str) -> Expression:
    source = text.replace("$input.", f"{INPUT}.").replace("$item", ITEM)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"'{text}' is not an expression: {error.msg}") from None
    references: set[str] = set()
    _check(tree, text, references)
    return Expression(text, tree, frozenset(references))


def _reference(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name) and node.id == ITEM:
        return "$item"
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        owner = "$input" if node.value.id == INPUT else node.value.id
        return f"{owner}.{node.attr}"
    return None


_ALLOWED = (
    ast.Expression, ast.Constant, ast.Compare, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Call, ast.Subscript,
    ast.Slice, ast.Tuple, ast.Load, ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd,
    *_COMPARE, *_BINARY,
)  # fmt: skip


def _check(node: ast.AST, text: str, references: set[str]) -> None:
    reference = _reference(node)
    if reference is not None:
        references.add(reference)
        return
    if isinstance(node, ast.Name):
        raise ExpressionError(f"'{text}': '{node.id}' is not a tensor reference ('<step>.<output>', '$input.<name>')")
    if isinstance(node, ast.Attribute):
        raise ExpressionError(f"'{text}': '{ast.unparse(node)}' is not a tensor reference ('<step>.<output>')")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            raise ExpressionError(f"'{text}': unknown function '{ast.unparse(node.func)}'; one of {sorted(FUNCTIONS)}")
        children: list[ast.AST] = list(node.args)
    elif isinstance(node, _ALLOWED):
        children = list(ast.iter_child_nodes(node))
    else:
        raise ExpressionError(f"'{text}': '{ast.unparse(node)}' is not allowed in an expression")
    for child in children:
        _check(child, text, references)


def _as_text(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind != "O":
        return array
    out = np.empty(array.shape, dtype=object)
    out.flat[:] = [item.decode("utf-8", "replace") if isinstance(item, bytes) else item for item in array.flat]
    return out


def _evaluate(node: ast.AST, tensors: Mapping[str, np.ndarray]):
    reference = _reference(node)
    if reference is not None:
        return _as_text(tensors[reference])
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        raise ExpressionError(f"'{node.id}' is not a tensor reference")
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)  # parse() lets no other call through
        return FUNCTIONS[node.func.id](*(np.asarray(_evaluate(arg, tensors)) for arg in node.args))
    if isinstance(node, ast.Compare):
        result, left = None, _evaluate(node.left, tensors)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(right_node, tensors)
            step = _COMPARE[type(op)](left, right)
            result = step if result is None else np.logical_and(result, step)
            left = right
        return result
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, tensors), _evaluate(node.right, tensors))
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, tensors)
        if isinstance(node.op, ast.Not):
            return np.logical_not(value)
        return np.negative(value) if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(value, tensors) for value in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        result = values[0]
        for value in values[1:]:
            result = combine(result, value)
        return result
    if isinstance(node, ast.Subscript):
        return np.asarray(_evaluate(node.value, tensors))[_index(node.slice, tensors)]
    raise ExpressionError(f"'{ast.unparse(node)}' is not allowed in an expression")


def _index(node: ast.AST, tensors: Mapping[str, np.ndarray]):
    if isinstance(node, ast.Slice):
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if part is None else int(_evaluate(part, tensors)) for part in parts))
    if isinstance(node, ast.Tuple):
        return tuple(_index(element, tensors) for element in node.elts)
    return int(_evaluate(node, tensors))
