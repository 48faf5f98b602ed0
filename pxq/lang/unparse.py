"""An AST back to PxL text: ``parse(unparse(tree))`` gives ``tree`` again, spans aside.

Parentheses are added only where precedence needs them; tuples are always parenthesised except
as a subscript index (``df['a', 'b']``). Comments are not in the AST, so they are not printed;
pragmas come first, then the docstring, then the statements.
"""

from __future__ import annotations

import math

from pxq.lang import ast
from pxq.lang.deep import deep

_INDENT = "    "

# Binding strength, loosest first (Python's order). Operands of a node print in parentheses
# when they bind more loosely than the node requires.
_ANY, _OR, _AND, _NOT, _COMPARE, _ADD, _MUL, _UNARY, _POSTFIX = range(9)
_BINARY = {"+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL, "%": _MUL}


@deep
def unparse(node: ast.Node) -> str:
    """PxL text for a Module (a whole script), a statement or an expression."""
    if isinstance(node, ast.Module):
        lines = [f"#px:set {pragma.key}={pragma.value}" for pragma in node.pragmas]
        lines += _block(node.docstring, node.body, "")
        return "\n".join(lines) + "\n"
    if isinstance(node, _STATEMENTS):
        return "\n".join(_statement(node, "")) + "\n"
    return _expr(node)


# ---------------------------------------------------------------- statements

_STATEMENTS = (ast.Import, ast.ImportFrom, ast.Assign, ast.ExprStmt, ast.Return, ast.FunctionDef)


def _block(docstring: str | None, body: tuple[ast.Stmt, ...], indent: str) -> list[str]:
    lines = [indent + _docstring(docstring)] if docstring is not None else []
    for statement in body:
        if isinstance(statement, ast.FunctionDef) and lines:
            lines.append("")
        lines.extend(_statement(statement, indent))
    return lines


def _statement(node: ast.Stmt, indent: str) -> list[str]:
    if isinstance(node, ast.FunctionDef):
        if not node.body and node.docstring is None:
            raise ValueError(f"def {node.name} has neither a body nor a docstring")
        params = ", ".join(_param(param) for param in node.params)
        returns = f" -> {_expr(node.returns)}" if node.returns is not None else ""
        header = f"{indent}def {node.name}({params}){returns}:"
        return [header, *_block(node.docstring, node.body, indent + _INDENT)]
    return [indent + _simple_statement(node)]


def _simple_statement(node: ast.Stmt) -> str:
    if isinstance(node, ast.Import):
        default = node.module.split(".")[0]
        return f"import {node.module}" + (f" as {node.alias}" if node.alias != default else "")
    if isinstance(node, ast.ImportFrom):
        names = ", ".join(name if alias == name else f"{name} as {alias}" for name, alias in node.names)
        return f"from {node.module} import {names}"
    if isinstance(node, ast.Assign):
        return f"{_expr(node.target)} = {_expr(node.value)}"
    if isinstance(node, ast.ExprStmt):
        return _expr(node.value)
    if isinstance(node, ast.Return):
        return "return" if node.value is None else f"return {_expr(node.value)}"
    raise TypeError(f"not a PxL statement: {node!r}")


def _param(param: ast.Param) -> str:
    text = param.name
    if param.annotation is not None:
        text += f": {_expr(param.annotation)}"
    if param.default is not None:
        text += f" = {_expr(param.default)}" if param.annotation is not None else f"={_expr(param.default)}"
    return text


def _docstring(value: str) -> str:
    """Triple-quoted when that reads back the same, else an ordinary literal."""
    plain = all(char.isprintable() or char in "\n\t" for char in value)
    if plain and "\\" not in value and '"""' not in value and not value.endswith('"'):
        return f'"""{value}"""'
    return _string(value)


# ---------------------------------------------------------------- expressions


def _expr(node: ast.Node, needs: int = _ANY) -> str:
    """``node`` as text, in parentheses if it binds more loosely than ``needs``."""
    text, strength = _expr_and_strength(node)
    return f"({text})" if strength < needs else text


def _expr_and_strength(node: ast.Node) -> tuple[str, int]:
    if isinstance(node, ast.Name):
        return node.id, _POSTFIX
    if isinstance(node, ast.Constant):
        return _constant(node.value)
    if isinstance(node, ast.Attribute):
        value = node.value
        if (
            isinstance(value, ast.Constant)
            and isinstance(value.value, (int, float))
            and not isinstance(value.value, bool)
        ):
            base = f"({_expr(value)})"  # 1.real would read as the float '1.' then a name
        else:
            base = _expr(value, _POSTFIX)
        return f"{base}.{node.attr}", _POSTFIX
    if isinstance(node, ast.Subscript):
        index = node.index
        if isinstance(index, ast.Tuple) and index.elts:
            inner = ", ".join(_expr(elt, _OR) for elt in index.elts) + ("," if len(index.elts) == 1 else "")
        else:
            inner = _expr(index)
        return f"{_expr(node.value, _POSTFIX)}[{inner}]", _POSTFIX
    if isinstance(node, ast.Call):
        arguments = [_expr(arg, _OR) for arg in node.args]
        arguments += [f"{keyword.name}={_expr(keyword.value, _OR)}" for keyword in node.keywords]
        return f"{_expr(node.func, _POSTFIX)}({', '.join(arguments)})", _POSTFIX
    if isinstance(node, ast.BinOp):
        strength = _BINARY[node.op]
        # left-associative: a - (b - c) keeps its parentheses, (a - b) - c does not need them
        return f"{_expr(node.left, strength)} {node.op} {_expr(node.right, strength + 1)}", strength
    if isinstance(node, ast.Compare):
        # both sides tighter than a comparison: (a < b) < c must not read as a chain
        return f"{_expr(node.left, _COMPARE + 1)} {node.op} {_expr(node.right, _COMPARE + 1)}", _COMPARE
    if isinstance(node, ast.BoolOp):
        strength = _OR if node.op == "or" else _AND
        # operands tighter than the operator itself: (a and b) and c stays nested
        return f" {node.op} ".join(_expr(value, strength + 1) for value in node.values), strength
    if isinstance(node, ast.UnaryOp):
        if node.op == "not":
            return f"not {_expr(node.operand, _NOT)}", _NOT
        return f"{node.op}{_expr(node.operand, _UNARY)}", _UNARY
    if isinstance(node, ast.List):
        return "[" + ", ".join(_expr(elt, _OR) for elt in node.elts) + "]", _POSTFIX
    if isinstance(node, ast.Tuple):
        if len(node.elts) == 1:
            return f"({_expr(node.elts[0], _OR)},)", _POSTFIX
        return "(" + ", ".join(_expr(elt, _OR) for elt in node.elts) + ")", _POSTFIX
    if isinstance(node, ast.Dict):
        items = ", ".join(f"{_expr(k, _OR)}: {_expr(v, _OR)}" for k, v in zip(node.keys, node.values))
        return "{" + items + "}", _POSTFIX
    raise TypeError(f"not a PxL expression: {node!r}")


def _constant(value: object) -> tuple[str, int]:
    if isinstance(value, str):
        return _string(value), _POSTFIX
    if isinstance(value, float) and math.isnan(value):
        raise ValueError("NaN has no PxL literal")
    if isinstance(value, float) and math.isinf(value):
        text = "1e999" if value > 0 else "-1e999"  # the literal that reads as infinity
    elif isinstance(value, (bool, int, float)) or value is None:
        text = repr(value)
    else:
        raise TypeError(f"not a PxL constant: {value!r}")
    # PxL has no negative literals: -1 reads back as unary minus on 1, so parenthesise it as an
    # operand of another operator, as in -(-1) or (-1).real
    return text, _MUL if text.startswith("-") else _POSTFIX


def _string(value: str) -> str:
    return repr(value)  # Python's repr of a str is a valid PxL string literal
