"""Why a PxL script does not parse, said the way a person would: Lark's exceptions to diagnostics.

Python that PxL rejects (loops, ``if``, lambdas, ``**``, ``in`` ...) is lexed as tokens of its own
(the terminals named in ``REJECTED_TERMINALS``), so the parser stops exactly at it; ``diagnose``
names the construct, underlines it and suggests the PxL way. Any other stop becomes
"unexpected X; expected Y" in plain words. To tell a ``for`` loop from a comprehension, or
``*args`` from ``*`` unpacking, it looks at the tokens before the failure: it parses the text
again, interactively, up to the failing token (only on this error path).
"""

from __future__ import annotations

import re
from typing import Protocol, cast

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from pxq.errors import Diagnostic, Span


class LexedToken(Protocol):
    """A token as the lexer (or pxq's indenter) hands it over. Lark types a Token's positions as
    Optional, for tokens built by hand without them; every token a lexer yields carries them all."""

    @property
    def type(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def line(self) -> int: ...
    @property
    def column(self) -> int: ...
    @property
    def end_line(self) -> int: ...
    @property
    def end_column(self) -> int: ...
    @property
    def start_pos(self) -> int: ...
    @property
    def end_pos(self) -> int: ...


def lexed(token: Token) -> LexedToken:
    """``token`` with its positions typed as present (see LexedToken)."""
    return cast(LexedToken, token)


class Problem(Exception):
    """A positioned syntax problem found while parsing; ``parse`` attaches the source."""

    def __init__(self, message: str, span: Span, hint: str):
        super().__init__(message)
        self.diagnostic = Diagnostic(message, span, hint)


LOOP_HINT = (
    "work on whole dataframes instead: filter with df[condition], compute columns with "
    "df.col = expr, aggregate with df.groupby(...).agg(...)"
)
SELECT_HINT = "choose per row with px.select(condition, value_if_true, value_if_false)"
_EXCEPTION_HINT = "PxL has no exceptions: a script either compiles or stops with an error"
_STATE_HINT = "values are immutable: return results from functions instead"
_ASYNC_HINT = "PxL is declarative: the whole script runs as one query, there is nothing to await"

# Terminals no rule uses: what they stand for and what to write instead. The postlexer lists
# their names in always_accept so that Lark keeps them in the lexer.
_UNSUPPORTED = {
    "WHILE": ("'while' loops", LOOP_HINT),
    "BREAK": ("'break' (there are no loops)", LOOP_HINT),
    "CONTINUE": ("'continue' (there are no loops)", LOOP_HINT),
    "LAMBDA": ("lambda expressions", "define a function with def, or apply px.* functions to whole columns"),
    "CLASS": ("class definitions", "write functions (def) that take and return dataframes"),
    "TRY": ("'try' statements", _EXCEPTION_HINT),
    "EXCEPT": ("'try'/'except' statements", _EXCEPTION_HINT),
    "FINALLY": ("'try'/'finally' statements", _EXCEPTION_HINT),
    "RAISE": ("'raise' statements", _EXCEPTION_HINT),
    "WITH": ("'with' statements", "open nothing: read tables with px.DataFrame(table=...)"),
    "DEL": ("'del' statements", "drop columns with df.drop(['column']); names cannot be deleted"),
    "GLOBAL": ("'global' declarations", _STATE_HINT),
    "NONLOCAL": ("'nonlocal' declarations", _STATE_HINT),
    "YIELD": ("'yield' (generators)", "return a dataframe instead"),
    "ASYNC": ("'async'", _ASYNC_HINT),
    "AWAIT": ("'await'", _ASYNC_HINT),
    "ASSERT": ("'assert' statements", "keep the rows you want with df[condition]"),
    "PASS": ("'pass' statements", "give the function a docstring or a return statement instead"),
    "IS": ("the 'is' operator", "compare values with == or !="),
    "FLOORDIV": ("the floor division operator '//'", "divide, then round down: px.floor(a / b)"),
    "WALRUS": ("assignment expressions (':=')", "assign on a line of its own: name = value"),
    "AMPERSAND": ("the bitwise operator '&'", "use 'and', which works element-wise on columns"),
    "VBAR": ("the bitwise operator '|'", "use 'or', which works element-wise on columns"),
    "CIRCUMFLEX": ("the bitwise operator '^'", "PxL has no bitwise operators; combine conditions with and, or, not"),
    "LSHIFT": ("the shift operator '<<'", "multiply by a power of two instead"),
    "RSHIFT": ("the shift operator '>>'", "divide by a power of two instead (px.floor(a / 4))"),
}
_CONTEXTUAL = [
    "FOR",
    "IF",
    "ELIF",
    "ELSE",
    "IN",
    "POW",
    "AUGASSIGN",
    "AT",
    "PREFIXED_STRING",
    "UNTERMINATED_STRING",
    "UNTERMINATED_LONG_STRING",
]
REJECTED_TERMINALS = (*_UNSUPPORTED, *_CONTEXTUAL)

_OPENERS = {"LPAR": "(", "LSQB": "[", "LBRACE": "{"}
_CLOSERS = {"RPAR": ")", "RSQB": "]", "RBRACE": "}"}
_MATCHING = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_NUMBERS = {"DEC_NUMBER", "HEX_NUMBER", "OCT_NUMBER", "BIN_NUMBER", "FLOAT_NUMBER"}
_STRINGS = {"STRING", "LONG_STRING"}
# Tokens that can end an operand: a '(' or '[' right after one is a call or a subscript.
_ENDS_OPERAND = {"NAME", "RPAR", "RSQB", "RBRACE", "TRUE", "FALSE", "NONE", *_NUMBERS, *_STRINGS}
# Tokens that start an operand (after an operand, one of these means a missing operator or ',').
_STARTS_OPERAND = {"NAME", "TRUE", "FALSE", "NONE", *_NUMBERS, *_STRINGS}
_STATEMENT_BOUNDARIES = {"_NEWLINE", "_INDENT", "_DEDENT", "SEMICOLON"}
# Tokens that an operand must follow.
_NEEDS_OPERAND_AFTER = {
    "PLUS", "MINUS", "STAR", "SLASH", "PERCENT", "EQ", "NE", "LT", "LE", "GT", "GE",
    "AND", "OR", "NOT", "TILDE", "ASSIGN", "DOT", "ARROW",
}  # fmt: skip


def diagnose(exc: UnexpectedToken | UnexpectedCharacters, text: str, parser: Lark) -> Problem:
    """The diagnostic for a Lark failure on ``text`` (the padded text that was parsed).

    These are the two failures of an LALR parser: the end of the text arrives as the token $END.
    """
    if isinstance(exc, UnexpectedCharacters):
        return _unexpected_character(exc)
    return _unexpected_token(lexed(exc.token), set(exc.accepts or exc.expected), text, parser)


# ---------------------------------------------------------------- context


class _Context:
    """What surrounds the failing token: open brackets and the statement so far."""

    def __init__(self, tokens: list[LexedToken]):
        self.tokens = tokens
        self.brackets: list[tuple[LexedToken, LexedToken | None]] = []  # (opener, the token before it)
        self.statement: list[LexedToken] = []
        previous = None
        for token in tokens:
            kind = token.type
            if kind in _OPENERS:
                self.brackets.append((token, previous))
            elif kind in _CLOSERS and self.brackets:
                self.brackets.pop()
            ends_def_header = kind == "COLON" and self.in_def_header and not self.brackets
            if not self.brackets and (kind in _STATEMENT_BOUNDARIES or ends_def_header):
                self.statement = []
            else:
                self.statement.append(token)
            previous = token
        self.previous = previous

    @property
    def at_statement_start(self) -> bool:
        return not self.statement

    @property
    def in_def_header(self) -> bool:
        return bool(self.statement) and self.statement[0].type == "DEF"

    def enclosing(self) -> str | None:
        """'call', 'parens', 'subscript', 'list' or 'braces': the innermost open bracket."""
        if not self.brackets:
            return None
        opener, before = self.brackets[-1]
        after_operand = before is not None and before.type in _ENDS_OPERAND
        if opener.type == "LPAR":
            return "call" if after_operand else "parens"
        if opener.type == "LSQB":
            return "subscript" if after_operand else "list"
        return "braces"


def _tokens_before_failure(text: str, parser: Lark) -> list[LexedToken]:
    """Parse ``text`` again, step by step, and return the tokens accepted before the failure."""
    tokens: list[LexedToken] = []
    try:
        for token in parser.parse_interactive(text).iter_parse():
            tokens.append(lexed(token))
    except (UnexpectedInput, Problem):
        return tokens[:-1]  # the failing token was the last one handed over
    return tokens  # the failure is at the end of the text


# ---------------------------------------------------------------- unexpected tokens


def _unexpected_token(token: LexedToken, accepts: set[str], text: str, parser: Lark) -> Problem:
    context = _Context(_tokens_before_failure(text, parser))
    kind = token.type
    span = _token_span(token, text)

    if kind in _UNSUPPORTED:
        what, hint = _UNSUPPORTED[kind]
        return _unsupported(what, span, hint)
    operand_may_start = "NAME" in accepts
    special = _rejected_python(token, span, context, operand_may_start, text)
    if special is not None:
        return special
    return _unexpected(token, span, accepts, context, text)


def opening_quote(literal: str) -> int:
    """Where the quotes of a string literal token start (after any prefix such as r or f)."""
    return min(i for i in (literal.find("'"), literal.find('"')) if i >= 0)


def _unsupported(what: str, span: Span, hint: str) -> Problem:
    return Problem(f"PxL does not support {what}", span, hint)


def _rejected_python(
    token: LexedToken, span: Span, context: _Context, operand_may_start: bool, text: str
) -> Problem | None:
    """The diagnostic for Python that PxL rejects in a way that depends on where it stands."""
    kind, value = token.type, token.value
    if kind == "FOR":
        if context.at_statement_start:
            return _unsupported("'for' loops", span, LOOP_HINT)
        comprehensions: dict[str | None, str] = {
            "list": "list comprehensions",
            "braces": "dict and set comprehensions",
            "call": "generator expressions",
            "parens": "generator expressions",
        }
        what = comprehensions.get(context.enclosing(), "comprehensions")
        return _unsupported(what, span, "write the values out, or compute on whole columns with dataframe operations")
    if kind == "IF":
        if context.at_statement_start:
            return _unsupported("'if' statements", span, SELECT_HINT)
        return _unsupported("conditional expressions (x if condition else y)", span, SELECT_HINT)
    if kind in ("ELIF", "ELSE"):
        return _unsupported("'if'/'elif'/'else' statements", span, SELECT_HINT)
    if kind == "IN":
        return _unsupported("the 'in' operator", span, "test membership with px.equals_any(value, [...])")
    if kind == "NOT" and not operand_may_start:
        following = re.compile(r"[ \t]*(\\\r?\n[ \t]*)*in\b").match(text, token.end_pos)
        if following:
            span = Span(span.line, span.column, span.line, span.column + (following.end() - token.start_pos),
                        token.start_pos, following.end())  # fmt: skip
            return _unsupported("the 'not in' operator", span, "use not px.equals_any(value, [...])")
        return None
    if kind == "AUGASSIGN":
        return _unsupported(f"augmented assignment ('{value}')", span, f"write it out: name = name {value[:-1]} value")
    if kind == "POW":
        if not operand_may_start:
            return _unsupported("the power operator '**'", span, "use px.pow(base, exponent)")
        if context.in_def_header:
            return _unsupported("'**kwargs' parameters", span, "declare each parameter by name")
        if context.enclosing() == "braces":
            return _unsupported("'**' dict unpacking", span, "write each item out: {'key': value, ...}")
        return _unsupported("'**' unpacking", span, "pass each keyword argument explicitly: name=value")
    if kind == "STAR" and context.previous is not None and context.previous.type == "IMPORT":
        return _unsupported("wildcard imports", span, "import the names you use: from px import DataFrame")
    if kind == "STAR" and operand_may_start:
        if context.in_def_header:
            return _unsupported("'*args' parameters", span, "declare each parameter by name")
        return _unsupported("'*' unpacking", span, "write each value out explicitly")
    if kind == "AT":
        if context.at_statement_start:
            return _unsupported("decorators", span, "call the function explicitly instead")
        return _unsupported("the matrix multiplication operator '@'", span, "PxL has no matrix operators")
    if kind == "PREFIXED_STRING":
        prefix = value[: opening_quote(value)].lower()
        if "f" in prefix:
            return _unsupported("f-strings", span, "join strings with +, e.g. 'pod ' + df.pod, and px.itoa(n) for ints")
        return _unsupported("bytes literals", span, "use a str literal: '...'")
    if kind == "UNTERMINATED_STRING":
        quote = value[opening_quote(value)]
        return Problem(
            "unterminated string",
            span,
            f"close it with {quote} on the same line; triple quotes ({quote * 3}) let a string span lines",
        )
    if kind == "UNTERMINATED_LONG_STRING":
        opening = re.match(r"[A-Za-z]*('''|\"\"\")", value)
        assert opening is not None  # the terminal's pattern starts so
        span = Span(span.line, span.column, span.line, span.column + opening.end(), token.start_pos,
                    token.start_pos + opening.end())  # fmt: skip
        return Problem("unterminated triple-quoted string", span, f"close it with {opening.group(1)}")
    if kind == "COLON":
        enclosing = context.enclosing()
        if enclosing is None and not context.in_def_header and not context.at_statement_start:
            return _unsupported("variable annotations", span, "drop the annotation: name = value")
        if enclosing == "subscript":
            return _unsupported(
                "slices", span, "keep the first n rows with df.head(n); cut strings with px.substring(s, start, length)"
            )
    if kind in ("COMMA", "RBRACE") and context.enclosing() == "braces" and _is_set_display(context):
        return _unsupported("set literals", span, "use a list: [a, b]")
    return None


def _is_set_display(context: _Context) -> bool:
    """Inside '{...}' with an item before the failure but no ':' after it: {a, b} is a set."""
    opener = context.brackets[-1][0]
    inside = [token for token in context.statement if token.start_pos > opener.start_pos]
    depth = 0
    for token in inside:
        if token.type in _OPENERS:
            depth += 1
        elif token.type in _CLOSERS:
            depth -= 1
        elif depth == 0 and token.type == "COLON":
            return False
    return bool(inside)


def _unexpected(token: LexedToken, span: Span, accepts: set[str], context: _Context, text: str) -> Problem:
    """Everything that is not rejected Python: 'unexpected X; expected Y', with a hint."""
    kind = token.type
    previous = context.previous
    at_end = kind == "$END" or (kind == "_DEDENT" and not text[token.start_pos :].strip())

    if context.brackets and (at_end or _looks_like_next_statement(token, context, text)):
        opener = context.brackets[-1][0]
        closer = _CLOSERS[_MATCHING[opener.type]]
        hint = f"add the matching '{closer}'" + ("" if at_end else f" before line {token.line}")
        return Problem(f"'{opener.value}' was never closed", _token_span(opener, text), hint)
    if kind == "_INDENT":
        return Problem(
            "unexpected indent", span, "only the body of a def is indented; line this up with the statement before"
        )
    if "_INDENT" in accepts and len(accepts) == 1:
        def_line = _last_def_line(context)
        return Problem(
            f"expected an indented block after the def on line {def_line}",
            span,
            "indent the function's body (4 spaces is usual)",
        )
    if kind in _CLOSERS and not context.brackets:
        return Problem(f"unmatched '{token.value}'", span, "remove it, or add the matching opening bracket before it")
    if kind in _CLOSERS and kind != _MATCHING[context.brackets[-1][0].type]:
        opener = context.brackets[-1][0]
        expected = _CLOSERS[_MATCHING[opener.type]]
        return Problem(
            f"unexpected '{token.value}'; expected '{expected}'",
            span,
            f"'{opener.value}' at line {opener.line}, column {opener.column} is still open",
        )
    if (
        previous is not None
        and previous.type in _NUMBERS
        and previous.end_pos == token.start_pos
        and (kind == "NAME" or kind in _NUMBERS)
    ):
        literal = previous.value + token.value
        return Problem(
            f"invalid number literal '{literal}'",
            Span(previous.line, previous.column, token.end_line, token.end_column, previous.start_pos, token.end_pos),
            "numbers are ints (42, 1_000, 0x1F, 0o17, 0b101) or floats (1.5, .5, 1e9)",
        )

    message = f"unexpected {_describe(token)}"
    phrases = ["a statement"] if context.at_statement_start and "DEF" in accepts else _expected_phrases(accepts)
    if phrases:
        message += "; expected " + _join_words(phrases)
    return Problem(message, span, _hint(token, accepts, context))


def _hint(token: LexedToken, accepts: set[str], context: _Context) -> str:
    kind = token.type
    previous = context.previous
    if kind == "ASSIGN":
        return "to compare values use '=='; a keyword argument is written name=value"
    if context.in_def_header and "COLON" in accepts and kind == "_NEWLINE":
        return "end the def line with ':'"
    if kind == "RSQB" and context.enclosing() == "subscript":
        return "put a column name, a list of columns or a condition between the brackets"
    if accepts >= _EXPRESSION_START and previous is not None and previous.type in _NEEDS_OPERAND_AFTER:
        return f"complete the expression after '{previous.value}'"
    if kind in _STARTS_OPERAND and previous is not None and previous.type in _ENDS_OPERAND:
        if context.brackets:
            return "is a ',' missing before it?"
        return "is an operator or a ',' missing before it?"
    if kind == "_NEWLINE":
        return "finish the statement on this line, or continue it inside brackets"
    if kind in _STRINGS and previous is not None and previous.type in ("IMPORT", "FROM"):
        return "module names are written without quotes: import px"
    if context.in_def_header and "LPAR" in accepts and "NAME" not in accepts:
        return "a def lists its parameters in parentheses: def name(param: type):"
    if "NAME" in accepts and "STRING" not in accepts:
        if token.value.isidentifier():
            return f"'{token.value}' is a reserved word and cannot be used as a name"
        return "a name is letters, digits and '_', not starting with a digit"
    if "COLON" in accepts and context.enclosing() == "braces":
        return "write each dict item as key: value"
    if context.at_statement_start:
        return "a statement starts with a name, a literal, a bracket, or import, from, def or return"
    if context.brackets and _MATCHING[context.brackets[-1][0].type] in accepts:
        opener = context.brackets[-1][0]
        return (
            f"separate items with ',', or close the '{opener.value}' opened at line {opener.line}, "
            f"column {opener.column}"
        )
    if accepts >= _EXPRESSION_START:
        return "a value (a name, a literal, a call, ...) is missing here"
    if "_NEWLINE" in accepts:
        return "the statement looks complete before this point: remove the rest or start a new line"
    return "PxL statements are imports, name = value, expressions, def and return, written as in Python"


def _looks_like_next_statement(token: LexedToken, context: _Context, text: str) -> bool:
    """Inside brackets, does ``token`` start a line no deeper than the statement it is in?

    Then the bracket was probably never closed; an indented continuation line is more likely
    a missing ','.
    """
    first = context.statement[0]
    if token.type.startswith("_") or token.line <= first.line or token.column > first.column:
        return False
    line_start = text.rfind("\n", 0, token.start_pos) + 1
    return not text[line_start : token.start_pos].strip()


def _last_def_line(context: _Context) -> int:
    return next(token.line for token in reversed(context.tokens) if token.type == "DEF")


def _describe(token: LexedToken) -> str:
    kind, value = token.type, token.value
    if kind == "NAME":
        return f"name '{value}'"
    if kind in _STRINGS:
        return "string " + (value if len(value) <= 24 else value[:20] + "...")
    if kind in _NUMBERS:
        return f"number {value}"
    if kind == "_NEWLINE":
        return "end of line"
    if kind == "$END":
        return "end of file"
    if kind == "_INDENT":
        return "indent"
    if kind == "_DEDENT":
        return "end of the indented block"
    if value.isidentifier():
        return f"keyword '{value}'"
    return f"'{value}'"


# Terminals that all can start an operand: expected together, they read "an expression".
_EXPRESSION_START = {"NAME", "STRING", "DEC_NUMBER", "LPAR"}


def _expected_phrases(accepts: set[str]) -> list[str]:
    """What the parser would have accepted, in a few plain words, most telling first."""
    expression = accepts >= _EXPRESSION_START
    end_of_line = "_NEWLINE" in accepts
    phrases = [f"'{_CLOSERS[kind]}'" for kind in _CLOSERS if kind in accepts]
    if end_of_line:
        phrases.append("end of line")
    if expression:
        phrases.append("an expression")
    if not end_of_line:
        for kind, phrase in (("COLON", "':'"), ("COMMA", "','"), ("IMPORT", "'import'")):
            if kind in accepts:
                phrases.append(phrase)
        if not expression and not phrases:
            for kind, phrase in (("LPAR", "'('"), ("NAME", "a name")):
                if kind in accepts:
                    phrases.append(phrase)
    if "_INDENT" in accepts:
        phrases.append("an indented block")
    if not phrases and "ASSIGN" in accepts:
        phrases.append("'='")
    return phrases[:3]


def _join_words(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _token_span(token: LexedToken, text: str) -> Span:
    """Where to put the caret for ``token``; end of line/file and dedents get one column."""
    if token.type == "$END":  # just after the last character that is not white space
        content = text.rstrip()
        line = content.count("\n") + 1
        column = len(content) - (content.rfind("\n") + 1) + 1
        return Span(line, column, line, column + 1, len(content), len(content) + 1)
    if token.type in ("_NEWLINE", "_DEDENT"):
        return Span(token.line, token.column, token.line, token.column + 1, token.start_pos, token.start_pos + 1)
    return Span(token.line, token.column, token.end_line, token.end_column, token.start_pos, token.end_pos)


# ---------------------------------------------------------------- unexpected characters

_CHARACTER_HINTS = {
    "!": "write 'not x' for negation and '!=' for inequality",
    "\\": "a '\\' continues a line only as the last character of that line",
    "\u201c": "use straight quotes: \" or '",
    "\u201d": "use straight quotes: \" or '",
    "\u2018": "use straight quotes: \" or '",
    "\u2019": "use straight quotes: \" or '",
}


def _unexpected_character(exc: UnexpectedCharacters) -> Problem:
    char = exc.char
    shown = repr(char)
    if not char.isascii():
        shown += f" (U+{ord(char):04X})"
    pos = cast(int, exc.pos_in_stream)  # lark types it None on the base class; the lexer sets it
    span = Span(exc.line, exc.column, exc.line, exc.column + 1, pos, pos + 1)
    if char in _CHARACTER_HINTS:
        hint = _CHARACTER_HINTS[char]
    elif char.isprintable():
        hint = "names may contain only letters, digits and '_'"
    else:
        hint = "remove it: control characters may appear only inside strings"
    return Problem(f"invalid character {shown}", span, hint)
