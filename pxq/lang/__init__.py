"""The PxL front end: ``parse`` text into a positioned AST, ``dump`` it, ``unparse`` it back to text."""

from pxq.lang.ast import dump
from pxq.lang.parse import parse
from pxq.lang.unparse import unparse

__all__ = ["dump", "parse", "unparse"]
