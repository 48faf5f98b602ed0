"""PxL text to ``ast.Module``: the parse stage.

One Lark LALR parser, built on first use from ``grammar/pxl.lark`` and shared by every call (it
keeps no per-parse state: the indentation postlexer keeps its state in the generator it returns).
Building it (the grammar's LALR analysis) takes 0.15 s; Lark's cache of the analysis, in a
directory only the user can write (``parser_cache_dir``), loads in 0.01 s at later starts.
Lark builds a parse tree; ``_Builder`` turns it into the frozen dataclasses of
``pxq.lang.ast`` and rejects what the grammar lets through but PxL does not accept (several
assignment targets, ``return`` outside a function, ...). Every failure leaves ``parse`` as a
``PxqSyntaxError`` carrying the source, so that ``.render()`` shows file:line:col and a caret;
``pxq.lang.diagnose`` turns Lark's exceptions into those diagnostics.
"""

from __future__ import annotations

import ast as pyast
import hashlib
import os
import re
import stat
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any, cast

import lark
from lark import Lark, Token, Transformer, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedToken, VisitError
from lark.indenter import Indenter

from pxq.errors import PxqSyntaxError, Source, Span
from pxq.lang import ast
from pxq.lang.deep import deep
from pxq.lang.diagnose import REJECTED_TERMINALS, LexedToken, Problem, diagnose, lexed, opening_quote
from pxq.resources import data_dir

# Deeper expressions than this are refused: the AST's consumers walk it recursively, on a
# deep-stack thread (see pxq.lang.deep) that this bound keeps them well inside. A chain like
# a + b + c nests once per operator, so this is also the longest such chain.
MAX_DEPTH = 10_000

# The _NEWLINE tokens holding comments, collected for the parse in progress (pragmas live there).
_COMMENT_TOKENS: ContextVar[list[Token] | None] = ContextVar("pxq_comment_tokens", default=None)


class PxlIndenter(Indenter):
    """Python-style indentation: _NEWLINE tokens become _INDENT/_DEDENT, ignored inside brackets.

    Unlike Lark's own ``Indenter.process`` this keeps its state in the generator (the parser is
    shared between threads), gives _INDENT/_DEDENT tokens their own positions, reports
    inconsistent dedents and a first line that is indented as positioned problems, and records
    the _NEWLINE tokens that hold comments for the pragma scan.
    """

    NL_type = "_NEWLINE"
    OPEN_PAREN_types = ["LPAR", "LSQB", "LBRACE"]
    CLOSE_PAREN_types = ["RPAR", "RSQB", "RBRACE"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8

    # Also keeps the terminals no rule uses (Python that PxL rejects) in the lexer.
    always_accept = (NL_type, *REJECTED_TERMINALS)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        comments = _COMMENT_TOKENS.get()
        levels = [0]
        paren_level = 0
        token: LexedToken | None = None
        first = True
        for raw in stream:
            token = lexed(raw)
            kind = token.type
            if first and kind != self.NL_type and token.column > 1:
                # The first statement is indented (the lexer skipped the blanks before it).
                raise Problem(
                    "unexpected indent",
                    Span(token.line, 1, token.line, token.column, token.start_pos - token.column + 1, token.start_pos),
                    "only the body of a def is indented; start this statement at column 1",
                )
            first = False
            if kind == self.NL_type:
                if comments is not None and "#" in token.value:
                    comments.append(raw)
                if paren_level == 0:
                    yield raw
                    yield from self._indentation(token, levels)
                continue
            if kind in self.OPEN_PAREN_types:
                paren_level += 1
            elif kind in self.CLOSE_PAREN_types and paren_level:
                paren_level -= 1
            yield raw
        while len(levels) > 1:  # close the blocks still open at the end of the text
            assert token is not None  # a block was opened, so there were tokens
            levels.pop()
            yield _zero_width(self.DEDENT_type, token.end_line, token.end_column, token.end_pos)

    def _indentation(self, newline: LexedToken, levels: list[int]) -> Iterator[Token]:
        # The indentation follows the last line break, which may be a bare '\r' as well as '\n'.
        indent_str = re.split(r"[\r\n]", newline.value)[-1]
        width = 0
        for char in indent_str:
            width = (width // self.tab_len + 1) * self.tab_len if char == "\t" else width + 1
        line, end_column, end_pos = newline.end_line, newline.end_column, newline.end_pos
        if width > levels[-1]:
            levels.append(width)
            yield Token(self.INDENT_type, indent_str, end_pos - len(indent_str), line, 1, line, end_column, end_pos)
            return
        if width not in levels:
            options = " or ".join(str(level) for level in levels)
            raise Problem(
                "unindent does not match any outer indentation level",
                Span(line, 1, line, end_column, end_pos - len(indent_str), end_pos),
                f"line it up with an enclosing block: indent it by {options} columns",
            )
        while width < levels[-1]:
            levels.pop()
            yield _zero_width(self.DEDENT_type, line, end_column, end_pos)


def _zero_width(kind: str, line: int, column: int, pos: int) -> Token:
    return Token(kind, "", pos, line, column, line, column, pos)


# Where the parser cache goes: $PXQ_CACHE_DIR, else $XDG_CACHE_HOME/pxq, else ~/.cache/pxq.
CACHE_DIR_ENV = "PXQ_CACHE_DIR"


def parser_cache_dir() -> Path | None:
    """The directory for Lark's cache of the PxL parser, made if missing; None (no cache) unless it
    is a real directory of this user that no one else may write: Lark's cache is a pickle, and
    loading one that another user could have written would run their code as this user (pxq
    often runs as root)."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        directory = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        directory = Path(base) / "pxq"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(directory)
    except OSError:  # a read-only home, no home: build the parser each time
        return None
    private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022
    return directory if private else None


def _cache_file(grammar: str) -> str | bool:
    """Lark's ``cache`` argument: a file in ``parser_cache_dir`` named by the grammar, Lark's and
    Python's versions (Lark checks the same inside it), so that checkouts with other grammars
    keep their own file instead of rewriting one in turn; False without a usable directory."""
    directory = parser_cache_dir()
    if directory is None:
        return False
    key = hashlib.sha256(f"{grammar}\0{lark.__version__}".encode()).hexdigest()[:16]
    return str(directory / f"pxl-parser-{key}-py{sys.version_info[0]}{sys.version_info[1]}.lark")


# The names ``_cache_file`` gives; pruning touches nothing else in the directory.
_CACHE_FILE_NAME = re.compile(r"pxl-parser-[0-9a-f]{16}-py[0-9]+\.lark")
# A cache file of another grammar (or Lark or Python version) not written for this long is removed
# when a new one is written: each grammar edit leaves a ~70 KB file, while checkouts or Python
# versions used side by side keep theirs (each loses it at most once a week, a 0.15 s rebuild).
STALE_PARSER_CACHE_S = 7 * 24 * 3600


def prune_parser_cache(directory: Path, keep: str, now: float) -> list[str]:
    """Remove the cache files in ``directory`` other than ``keep`` last written more than
    ``STALE_PARSER_CACHE_S`` before ``now``; returns their names. Only regular files named as
    ``_cache_file`` names them, in that directory itself: symlinks (to a file or as the directory)
    are never followed nor removed."""
    try:
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return []
    removed = []
    try:
        with os.scandir(directory_fd) as entries:
            for entry in entries:
                if entry.name == keep or not _CACHE_FILE_NAME.fullmatch(entry.name):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                    if not stat.S_ISREG(info.st_mode) or now - info.st_mtime <= STALE_PARSER_CACHE_S:
                        continue
                    os.unlink(entry.name, dir_fd=directory_fd)
                except OSError:  # removed meanwhile by another pxq starting
                    continue
                removed.append(entry.name)
    finally:
        os.close(directory_fd)
    return removed


def _written_ns(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def new_parser() -> Lark:
    """A new PxL parser, from Lark's cache when it holds this grammar's (see ``parser_cache_dir``);
    writing a new cache file prunes stale ones (``prune_parser_cache``)."""
    grammar = (data_dir("grammar") / "pxl.lark").read_text(encoding="utf-8")
    cache_file = _cache_file(grammar)
    written_before = _written_ns(cache_file) if isinstance(cache_file, str) else None
    built = Lark(
        grammar,
        parser="lalr",
        lexer="basic",
        maybe_placeholders=True,
        postlex=PxlIndenter(),
        cache=cache_file,
    )
    if isinstance(cache_file, str) and _written_ns(cache_file) not in (None, written_before):
        prune_parser_cache(Path(cache_file).parent, Path(cache_file).name, time.time())
    return built


@cache
def parser() -> Lark:
    """The shared PxL parser (built once, on first use)."""
    return new_parser()


@deep
def parse(text: str, filename: str = "<script>") -> ast.Module:
    """Parse PxL source into an ``ast.Module``; raise ``PxqSyntaxError`` if it is not valid PxL."""
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte order mark left by an editor; positions count from after it
    source = Source(text, filename)
    padded = text if text.endswith("\n") else text + "\n"  # every statement ends with a newline
    comment_tokens: list[Token] = []
    reset = _COMMENT_TOKENS.set(comment_tokens)
    try:
        try:
            tree = parser().parse(padded)
        except (UnexpectedToken, UnexpectedCharacters) as exc:
            raise diagnose(exc, padded, parser()) from None
        finally:
            _COMMENT_TOKENS.reset(reset)
        _check_depth(tree)
        try:
            statements = _Builder().transform(tree)
        except VisitError as exc:
            raise exc.orig_exc from None
        pragmas = _pragmas(padded, comment_tokens)
    except Problem as problem:
        raise PxqSyntaxError(problem.diagnostic, source) from None
    docstring, body = _split_docstring(statements)
    return ast.Module(_whole_text(text), body, docstring, pragmas)


# ---------------------------------------------------------------- parse tree to AST


def _span(item: Token | ast.Node) -> Span:
    """The span of a token or an AST node."""
    if isinstance(item, Token):
        token = lexed(item)
        return Span(token.line, token.column, token.end_line, token.end_column, token.start_pos, token.end_pos)
    return item.span


def _join(first: Token | ast.Node, last: Token | ast.Node) -> Span:
    """From the start of ``first`` to the end of ``last`` (tokens or nodes)."""
    start, end = _span(first), _span(last)
    return Span(start.line, start.column, end.end_line, end.end_column, start.start_pos, end.end_pos)


def _whole_text(text: str) -> Span:
    last_line = text.count("\n") + 1
    last_column = len(text) - (text.rfind("\n") + 1) + 1
    return Span(1, 1, last_line, last_column, 0, len(text))


def _split_docstring(body: Sequence[ast.Stmt]) -> tuple[str | None, tuple[ast.Stmt, ...]]:
    """A leading string-constant statement is the docstring, not part of the body."""
    if body and isinstance(body[0], ast.ExprStmt):
        value = body[0].value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            return value.value, tuple(body[1:])
    return None, tuple(body)


_ASSIGNABLE = (ast.Name, ast.Attribute, ast.Subscript)
_NOT_ASSIGNABLE = {
    ast.Call: "a function call",
    ast.Constant: "a literal",
    ast.Dict: "a dict",
    ast.BinOp: "an expression",
    ast.UnaryOp: "an expression",
    ast.BoolOp: "an expression",
    ast.Compare: "a comparison",
}


# A rule's children as Lark hands them to _Builder: tokens, and what the methods made of subtrees.
Children = list[Any]


class _Builder(Transformer[Token, list[ast.Stmt]]):
    """Lark parse tree to ``pxq.lang.ast`` nodes; one method per rule or alias.

    Spans come from the tokens the grammar keeps (keywords and closing brackets where a node
    starts or ends with one) and from the child nodes' spans.
    """

    def __init__(self) -> None:
        super().__init__(visit_tokens=False)

    # ------------------------------------------------------------ statements

    def start(self, statements: Children) -> list[ast.Stmt]:
        for statement in statements:
            if isinstance(statement, ast.Return):
                raise Problem(
                    "'return' outside a function",
                    statement.span,
                    "return belongs inside a def; at the top level show results with px.display(df)",
                )
        return statements

    def import_stmt(self, children: Children) -> ast.Import:
        keyword, names, alias = children
        module = ".".join(name.value for name in names)
        bound = alias.value if alias else names[0].value
        return ast.Import(_join(keyword, alias or names[-1]), module, bound)

    def from_stmt(self, children: Children) -> ast.ImportFrom:
        keyword, names, *imported = children
        pairs = tuple((name.value, (alias or name).value) for name, alias in imported)
        last_name, last_alias = imported[-1]
        return ast.ImportFrom(_join(keyword, last_alias or last_name), ".".join(n.value for n in names), pairs)

    def import_as_name(self, children: Children) -> tuple[Token, Token | None]:
        return tuple(children)  # (name, alias or None)

    def dotted_name(self, names: Children) -> list[Token]:
        return names

    def expr_stmt(self, children: Children) -> ast.ExprStmt | ast.Assign:
        if len(children) == 1:
            return ast.ExprStmt(children[0].span, children[0])
        if len(children) > 3:
            raise Problem(
                "PxL does not support chained assignment",
                _span(children[3]),
                "assign one target per statement, e.g. b = value, then a = b",
            )
        target, _, value = children
        _check_target(target)
        return ast.Assign(_join(target, value), target, value)

    def return_stmt(self, children: Children) -> ast.Return:
        keyword, value = children
        return ast.Return(_join(keyword, value or keyword), value)

    def funcdef(self, children: Children) -> ast.FunctionDef:
        keyword, name, params, returns, *statements = children
        seen: set[str] = set()
        defaulted = None
        for param in params:
            if param.name in seen:
                raise Problem(f"duplicate parameter '{param.name}'", param.span, "give each parameter its own name")
            seen.add(param.name)
            if param.default is not None:
                defaulted = param
            elif defaulted is not None:
                raise Problem(
                    f"parameter '{param.name}' without a default follows '{defaulted.name}', which has one",
                    param.span,
                    f"give '{param.name}' a default, or move it before the parameters that have defaults",
                )
        docstring, body = _split_docstring(statements)
        span = _join(keyword, statements[-1])
        return ast.FunctionDef(span, name.value, params, returns, body, docstring, _span(name))

    def parameters(self, params: Children) -> tuple[ast.Param, ...]:
        return tuple(params)

    def param(self, children: Children) -> ast.Param:
        name, annotation, default = children
        return ast.Param(_join(name, default or annotation or name), name.value, annotation, default)

    # ------------------------------------------------------------ operators

    def or_test(self, operands: Children) -> ast.BoolOp:
        return ast.BoolOp(_join(operands[0], operands[-1]), "or", tuple(operands))

    def and_test(self, operands: Children) -> ast.BoolOp:
        return ast.BoolOp(_join(operands[0], operands[-1]), "and", tuple(operands))

    def not_op(self, children: Children) -> ast.UnaryOp:
        keyword, operand = children
        return ast.UnaryOp(_join(keyword, operand), "not", operand)

    def comparison(self, children: Children) -> ast.Compare | ast.BoolOp:
        # a < b < c means (a < b) and (b < c)
        compares = tuple(
            ast.Compare(_join(left, right), op.value, left, right)
            for left, op, right in zip(children[0:-1:2], children[1::2], children[2::2])
        )
        if len(compares) == 1:
            return compares[0]
        return ast.BoolOp(_join(children[0], children[-1]), "and", compares)

    def binop(self, children: Children) -> ast.BinOp:
        left, op, right = children
        return ast.BinOp(_join(left, right), op.value, left, right)

    def factor(self, children: Children) -> ast.UnaryOp:
        op, operand = children
        return ast.UnaryOp(_join(op, operand), op.value, operand)

    # ------------------------------------------------------------ postfix

    def call(self, children: Children) -> ast.Call:
        func, *arguments, close = children
        args, keywords, names = [], [], set()
        for argument in arguments:
            if isinstance(argument, ast.Keyword):
                if argument.name in names:
                    raise Problem(
                        f"keyword argument '{argument.name}' given twice", argument.span, "remove one of them"
                    )
                names.add(argument.name)
                keywords.append(argument)
            elif keywords:
                raise Problem(
                    "positional argument follows a keyword argument",
                    argument.span,
                    "put positional arguments before keyword arguments",
                )
            else:
                args.append(argument)
        return ast.Call(_join(func, close), func, tuple(args), tuple(keywords))

    def keyword(self, children: Children) -> ast.Keyword:
        name, value = children
        return ast.Keyword(_join(name, value), name.value, value)

    def getitem(self, children: Children) -> ast.Subscript:
        value, index, close = children
        return ast.Subscript(_join(value, close), value, index)

    def getattr(self, children: Children) -> ast.Attribute:
        value, name = children
        return ast.Attribute(_join(value, name), value, name.value, _span(name))

    # ------------------------------------------------------------ atoms

    def tuple(self, elts: Children) -> ast.Tuple:
        return ast.Tuple(_join(elts[0], elts[-1]), tuple(elts))

    def parens(self, children: Children) -> ast.Expr:
        opening, inner, closing = children
        expression: ast.Expr = replace(inner, span=_join(opening, closing))
        return expression  # the parentheses belong to the span

    def empty_tuple(self, children: Children) -> ast.Tuple:
        return ast.Tuple(_join(*children), ())

    def list(self, children: Children) -> ast.List:
        return ast.List(_join(children[0], children[-1]), tuple(children[1:-1]))

    def dict(self, children: Children) -> ast.Dict:
        items = children[1:-1]
        return ast.Dict(_join(children[0], children[-1]), tuple(items[0::2]), tuple(items[1::2]))

    def name(self, children: Children) -> ast.Name:
        return ast.Name(_span(children[0]), children[0].value)

    def number(self, children: Children) -> ast.Constant:
        token = children[0]
        digits = token.value.replace("_", "")
        if token.type == "FLOAT_NUMBER":
            return ast.Constant(_span(token), float(digits))
        # Checked before int() converts it: Python refuses decimal strings of more than 4300
        # digits, and no literal beyond 2**63 (the magnitude of the least int64) is an int64.
        if token.type == "DEC_NUMBER" and len(digits.lstrip("0")) > _INT64_DIGITS:
            raise _too_large(token)
        value = int(digits, 0)
        if value > 2**63:
            raise _too_large(token)
        return ast.Constant(_span(token), value)

    def string(self, tokens: Children) -> ast.Constant:
        parts = []
        for token in tokens:
            part = _string_value(token)
            _check_encodable(part, token)
            parts.append(part)
        return ast.Constant(_join(tokens[0], tokens[-1]), "".join(parts))

    def true(self, children: Children) -> ast.Constant:
        return ast.Constant(_span(children[0]), True)

    def false(self, children: Children) -> ast.Constant:
        return ast.Constant(_span(children[0]), False)

    def none(self, children: Children) -> ast.Constant:
        return ast.Constant(_span(children[0]), None)


_INT64_DIGITS = len(str(2**63))


def _too_large(token: Token) -> Problem:
    text = token.value if len(token.value) <= 40 else f"{token.value[:20]}... ({len(token.value)} characters)"
    return Problem(
        f"integer literal {text} is out of range for int64",
        _span(token),
        "PxL integers are 64-bit: -9223372036854775808 .. 9223372036854775807",
    )


def _check_encodable(value: str, token: Token) -> None:
    """Refuse a string that is not Unicode text (a lone surrogate from an escape like '\\ud800')."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Problem(
            f"string literal contains a lone surrogate {value[exc.start]!r}, which is not a character",
            _span(token),
            "PxL strings are UTF-8 text: write the character itself, or its full code point "
            "as '\\U0001F600'; surrogate pairs like '\\ud83d\\ude00' are UTF-16, not PxL",
        ) from None


def _check_target(target: ast.Expr) -> None:
    if isinstance(target, _ASSIGNABLE):
        return
    if isinstance(target, (ast.Tuple, ast.List)):
        raise Problem(
            "PxL does not support assigning to several targets at once",
            target.span,
            "assign each target in a statement of its own",
        )
    raise Problem(
        f"cannot assign to {_NOT_ASSIGNABLE[type(target)]}",
        target.span,
        "the left of '=' must be a name, df.column or df['column']; to compare values use '=='",
    )


def _string_value(token: Token) -> str:
    """The value of one string literal token, with Python's escape processing unless raw."""
    text: str = token.value
    quote_at = opening_quote(text)
    prefix = text[:quote_at].lower()
    quote_len = 3 if text[quote_at : quote_at + 3] in ("'''", '"""') else 1
    body = text[quote_at + quote_len : len(text) - quote_len]
    if "\r" in body:
        body = body.replace("\r\n", "\n")
    if "r" in prefix or "\\" not in body:
        return body
    try:
        # Safe: the text is a single string-literal token, so literal_eval only decodes escapes.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes like '\d' keep their backslash
            return cast(str, pyast.literal_eval(text.replace("\r\n", "\n")))
    except (SyntaxError, ValueError) as exc:
        reason = getattr(exc, "msg", None) or str(exc)
        raise Problem(
            f"invalid string literal: {reason}",
            _span(token),
            "write a backslash as '\\\\', or use a raw string r'...' where backslashes are literal",
        ) from None


def _check_depth(tree: Tree[Token]) -> None:
    """Refuse trees nested deeper than MAX_DEPTH (walks the parse tree without recursion)."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            tokens = _tokens_of(node)
            raise Problem(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels)",
                _join(tokens[0], tokens[-1]),
                "split it into several assignments",
            )
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))


def _tokens_of(tree: Tree[Token]) -> list[Token]:
    """The tokens under ``tree``, in order (without recursion)."""
    tokens: list[Token] = []
    stack: list[Tree[Token] | Token] = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, Tree):
            stack.extend(reversed(item.children))
        elif isinstance(item, Token):
            tokens.append(item)
    return tokens


# ---------------------------------------------------------------- pragmas

_COMMENT = re.compile(r"#[^\r\n]*")
_PRAGMA = re.compile(r"#px:set(?:[ \t]|$)")
_PRAGMA_BODY = re.compile(r"([A-Za-z_][\w.]*)=(\S+)")


def _pragmas(text: str, newline_tokens: list[Token]) -> tuple[ast.Pragma, ...]:
    """'#px:set key=value' comments that start their line (after any indentation)."""
    pragmas = []
    for raw in newline_tokens:
        token = lexed(raw)
        for match in _COMMENT.finditer(token.value):
            comment = match.group()
            if not _PRAGMA.match(comment):
                continue
            pos = token.start_pos + match.start()
            line_start = text.rfind("\n", 0, pos) + 1
            if text[line_start:pos].strip(" \t\f"):
                continue  # a trailing comment after code
            line = token.line + token.value.count("\n", 0, match.start())
            column = pos - line_start + 1
            span = Span(line, column, line, column + len(comment), pos, pos + len(comment))
            body = _PRAGMA_BODY.fullmatch(comment[len("#px:set") :].strip())
            if body is None:
                raise Problem(
                    "malformed pragma",
                    span,
                    "write it as '#px:set key=value', e.g. '#px:set max_output_rows_per_table=500'",
                )
            pragmas.append(ast.Pragma(span, body.group(1), body.group(2)))
    return tuple(pragmas)


__all__ = ["MAX_DEPTH", "PxlIndenter", "parse", "parser"]
