"""Bare carriage returns never crash the parser (hypothesis found '#\\r0' raising IndexError)."""

import pytest

from pxq.errors import PxqSyntaxError
from pxq.lang import parse


@pytest.mark.parametrize("text", ["#\r0", "x = 1\r  y = 2\n", "\r\r\r"])
def test_bare_carriage_returns_are_syntax_errors_or_parse(text):
    try:
        parse(text)
    except PxqSyntaxError as exc:
        assert exc.diagnostics and exc.diagnostics[0].span is not None
