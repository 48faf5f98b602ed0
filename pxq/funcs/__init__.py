"""PxL's functions: the registry (``pxq.funcs.registry``) and the builtins that fill it.

Importing any module of this package fills the registry first, here and only here, so every
reader (compiler, executor, constant folding, ``pxq funcs``) sees every function.
"""

from pxq.funcs.registry import load_builtins

load_builtins()
