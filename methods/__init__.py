"""Attention methods: one registered plugin per file (see methods/base.py for the contract)."""
from methods.base import (  # noqa: F401
    AttentionModule, Method, MethodConfigError, Option, Problem, UnknownMethodError, all_methods, get,
    parse_method_args, register,
)
