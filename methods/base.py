"""The method contract: what every attention method declares, accepts and returns.

Layout at the boundary is q, k, v as [B, H, T, D] (k and v may carry fewer heads: grouped-query
attention) and the output is [B, H, T, D]. A method is a *factory of per-layer modules*: `build()`
returns an `nn.Module` whose state (learned estimators, random features) belongs to one attention
layer, so a whole model can be trained and saved.

This file imports torch only; Triton, flash-attn and xformers are imported lazily by the methods
that need them, so listing methods stays cheap.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Mapping

import torch
from torch import nn

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
                                  "fp64": torch.float64}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class Problem:
    """One attention call as a sweep cell poses it (shapes, dtype, direction, device, mode)."""

    batch: int
    heads: int
    kv_heads: int
    seq_len: int
    head_dim: int
    dtype: str = "fp32"          # key of DTYPES
    causal: bool = True
    device: str = "cpu"          # "cpu" or "cuda"
    backward: bool = False       # True when the cell times forward + backward
    padding: bool = False        # True when a key padding mask is passed (encoders)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


class MethodConfigError(ValueError):
    """Bad method options (unknown key, wrong type, value out of range)."""


@dataclass(frozen=True)
class Option:
    """A declared option of a method: `--method-args NAME.key=value` reaches it."""

    name: str
    default: Any
    help: str
    type: Callable[[str], Any] | None = None   # parser for the string form; default: type of default
    choices: tuple | None = None

    def parse(self, raw: Any) -> Any:
        if not isinstance(raw, str):
            value = raw
        else:
            parser = self.type or _parser_for(self.default)
            try:
                value = parser(raw)
            except (TypeError, ValueError) as exc:
                raise MethodConfigError(f"option {self.name}={raw!r}: {exc}") from None
        if self.choices is not None and value not in self.choices:
            raise MethodConfigError(f"option {self.name}={value!r}: expected one of {', '.join(map(str, self.choices))}")
        return value


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _parse_optional(raw: str):
    return None if raw.strip().lower() in ("none", "") else raw


def _parser_for(default: Any) -> Callable[[str], Any]:
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if default is None:
        return _parse_optional
    return str


class AttentionModule(nn.Module):
    """Base of the per-layer modules. Subclasses implement `forward`.

    forward(q, k, v, *, causal, key_padding_mask=None, scale=None) -> [B, H, T, D]
      key_padding_mask: bool [B, T], True where the token is real (encoders with padding).
      scale: softmax scale; None means 1/sqrt(D).

    `impl` names what actually ran on the last call (e.g. which SDPA backend) and is recorded in
    the result row. `attention_probs` is optional: a method that can expose its attention
    distribution for a subset of query rows returns [B, H, len(rows), T].
    """

    impl: str = ""

    def attention_probs(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                        rows: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                        scale: float | None = None) -> torch.Tensor | None:
        return None

    # --- distillation protocol (read by harness/train; all optional) ---------------------------------
    # A module that estimates a compressed attention map sets `self.last_aux = {"logits": [B, H, T, K], ...}`
    # in forward (log-scores over K cells, with a gradient) and implements `compress_probs`, so a trainer can
    # pull the estimate towards the exact attention. `note_trained` tells the module it was trained.

    def compress_probs(self, probs: torch.Tensor, *, causal: bool,
                       valid: torch.Tensor | None) -> torch.Tensor | None:
        """Exact attention probabilities [B, H, T, T] mapped to the geometry of this module's estimate
        [B, H, T, K] (rows keep their sums); None when the module has no estimate."""
        return None

    def retained_memory_bytes(self) -> int:
        """Device memory the module keeps between calls besides its parameters and buffers (caches such as
        captured CUDA graphs and their memory pools). The harness adds it to a call's peak: a replay that
        allocates nothing new still needs it."""
        return 0

    def note_trained(self, steps: int) -> None:
        """Called by a trainer after `steps` optimizer steps updated this module (e.g. to say so in `impl`)."""

    def stage_profile(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                      timer: Callable[[Callable[[], object]], float]) -> dict[str, float] | None:
        """Optional per-stage breakdown of one forward: run each stage's work as a closure through
        `timer(fn) -> median ms` (the harness's own timer for the device) and return {stage: ms} in
        pipeline order. Stages must be separable: each closure gets precomputed inputs of the stage."""
        return None

    def stage_profile_backward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                               timer: Callable[[Callable[[], object]], float]) -> dict[str, float] | None:
        """Optional per-stage breakdown of the backward of one forward+backward: {stage: ms} of each
        differentiable stage's backward alone (closures through `timer`, as stage_profile)."""
        return None


class Method:
    """A registered attention method. Subclass, declare, and decorate with `@register`.

    Declarations (class attributes) drive `supports()`; override `extra_reasons()` for more checks.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    exact: ClassVar[bool] = False                 # True: must match softmax attention to tolerance
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    dtypes: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "bf16", "fp64")
    head_dims: ClassVar[tuple[int, ...] | None] = None   # None: any
    max_head_dim: ClassVar[int | None] = None
    causal_ok: ClassVar[bool] = True
    bidirectional_ok: ClassVar[bool] = True
    backward_ok: ClassVar[bool] = True
    padding_ok: ClassVar[bool] = True
    packages: ClassVar[tuple[str, ...]] = ()     # import names that must be importable
    options: ClassVar[tuple[Option, ...]] = ()
    complexity: ClassVar[str] = ""               # e.g. "O(T^2 D)", shown in the method table

    # --- options -------------------------------------------------------------------------
    @classmethod
    def option_map(cls) -> dict[str, Option]:
        return {o.name: o for o in cls.options}

    @classmethod
    def resolve_config(cls, raw: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overlaid with `raw`; unknown keys and bad values raise MethodConfigError."""
        opts = cls.option_map()
        cfg = {name: o.default for name, o in opts.items()}
        for key, value in (raw or {}).items():
            if key not in opts:
                valid = ", ".join(sorted(opts)) or "none"
                raise MethodConfigError(f"unknown option '{cls.name}.{key}'; {cls.name} accepts: {valid}")
            cfg[key] = opts[key].parse(value)
        cls.validate_config(cfg)
        return cfg

    @classmethod
    def validate_config(cls, cfg: dict[str, Any]) -> None:
        """Raise MethodConfigError for values that parse but make no sense."""

    @classmethod
    def label_base(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The option values a variant's label is written against (report: 'name[key=value,...]' lists the options
        of cfg that differ from these): the defaults; a method with named presets may return the preset's values."""
        return {o.name: o.default for o in cls.options}

    # --- availability and support ----------------------------------------------------------
    @classmethod
    def missing_packages(cls) -> list[str]:
        return [p for p in cls.packages if importlib.util.find_spec(p) is None]

    @classmethod
    def availability(cls, device: str) -> list[str]:
        """Reasons the method cannot run on `device` here; empty when it can. Imports nothing heavy."""
        reasons = [f"package '{p}' is not installed" for p in cls.missing_packages()]
        if device not in cls.devices:
            reasons.append(f"device={device} (supports {', '.join(cls.devices)})")
        return reasons

    @classmethod
    def supports(cls, problem: Problem, cfg: Mapping[str, Any]) -> list[str]:
        """Every reason this method refuses `problem`; empty when supported."""
        reasons = cls.availability(problem.device)
        if problem.dtype not in cls.dtypes:
            reasons.append(f"dtype={problem.dtype} (supports {', '.join(cls.dtypes)})")
        if cls.head_dims is not None and problem.head_dim not in cls.head_dims:
            reasons.append(f"head_dim={problem.head_dim} (supports {', '.join(map(str, cls.head_dims))})")
        if cls.max_head_dim is not None and problem.head_dim > cls.max_head_dim:
            reasons.append(f"head_dim={problem.head_dim} (at most {cls.max_head_dim})")
        if problem.causal and not cls.causal_ok:
            reasons.append("causal attention is not supported")
        if not problem.causal and not cls.bidirectional_ok:
            reasons.append("bidirectional attention is not supported")
        if problem.backward and not cls.backward_ok:
            reasons.append("backward is not supported")
        if problem.padding and not cls.padding_ok:
            reasons.append("key padding masks are not supported")
        if problem.heads % problem.kv_heads != 0:
            reasons.append(f"heads={problem.heads} is not a multiple of kv_heads={problem.kv_heads}")
        reasons.extend(cls.extra_reasons(problem, cfg))
        return reasons

    @classmethod
    def extra_reasons(cls, problem: Problem, cfg: Mapping[str, Any]) -> list[str]:
        return []

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: Mapping[str, Any], problem: Problem, *, layer: int = 0, seed: int = 0) -> AttentionModule:
        """A fresh per-layer module for calls shaped like `problem` (heads, head_dim, device, dtype).

        `cfg` comes from resolve_config; `seed` seeds any randomness (features, hashes) and is recorded."""
        raise NotImplementedError


# --- helpers shared by methods ---------------------------------------------------------------

def repeat_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, Hkv, T, D] -> [B, heads, T, D] for grouped-query attention."""
    hkv = x.shape[1]
    if hkv == heads:
        return x
    return x.repeat_interleave(heads // hkv, dim=1)


def padding_bias(key_padding_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """bool [B, T] (True = real token) -> additive bias [B, 1, 1, T] (0 or -inf)."""
    if key_padding_mask is None:
        return None
    bias = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
    bias.masked_fill_(~key_padding_mask, float("-inf"))
    return bias[:, None, None, :]


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Shape checks every module may call first; raises ValueError with the shapes in words."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"expected q, k, v as [B, H, T, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"incompatible q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"q heads {q.shape[1]} not a multiple of k/v heads {k.shape[1]}")


# --- registry ----------------------------------------------------------------------------------

ENTRY_POINT_GROUP = "harness.methods"
_REGISTRY: dict[str, type[Method]] = {}
_LOAD_ERRORS: dict[str, str] = {}
_DISCOVERED = False

# In-tree methods: every module and package under methods/ except this one and names starting with
# "_" is imported at discovery. They must not import Triton, flash-attn or xformers at module level.
_NOT_METHODS = {"base"}


def builtin_modules() -> list[str]:
    import pkgutil
    from pathlib import Path

    here = Path(__file__).resolve().parent
    return sorted(f"methods.{m.name}" for m in pkgutil.iter_modules([str(here)])
                  if not m.name.startswith("_") and m.name not in _NOT_METHODS)


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a Method subclass to the registry under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    other = _REGISTRY.get(cls.name)
    if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"method name '{cls.name}' registered twice ({other.__module__}, {cls.__module__})")
    _REGISTRY[cls.name] = cls
    return cls


def discover() -> None:
    """Import in-tree methods and third-party entry points (once)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    import importlib
    from importlib.metadata import entry_points

    for mod in builtin_modules():
        try:
            importlib.import_module(mod)
        except Exception as exc:          # noqa: BLE001 - recorded and shown by `harness list`
            _LOAD_ERRORS[mod] = f"{type(exc).__name__}: {exc}"
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:          # noqa: BLE001
            _LOAD_ERRORS[f"{ep.name} ({ep.value})"] = f"{type(exc).__name__}: {exc}"
            continue
        if isinstance(obj, type) and issubclass(obj, Method) and obj.name not in _REGISTRY:
            register(obj)
    _DISCOVERED = True


def all_methods() -> dict[str, type[Method]]:
    discover()
    return dict(sorted(_REGISTRY.items()))


def load_errors() -> dict[str, str]:
    discover()
    return dict(_LOAD_ERRORS)


class UnknownMethodError(KeyError):
    def __init__(self, name: str, suggestion: str | None):
        self.name = name
        self.suggestion = suggestion
        msg = f"unknown method '{name}'"
        if suggestion:
            msg += f"; did you mean '{suggestion}'?"
        super().__init__(msg)

    def __str__(self) -> str:
        return self.args[0]


def get(name: str) -> type[Method]:
    methods = all_methods()
    if name in methods:
        return methods[name]
    import difflib

    close = difflib.get_close_matches(name, list(methods), n=1, cutoff=0.5)
    raise UnknownMethodError(name, close[0] if close else None)


def parse_method_args(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """['sea.k=64', 'sdpa.backend=math'] -> {'sea': {'k': '64'}, 'sdpa': {'backend': 'math'}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, opt = key.strip().partition(".")
        if not sep or not dot or not name or not opt:
            raise MethodConfigError(f"--method-args expects NAME.key=value, got {item!r}")
        out.setdefault(name, {})[opt] = value.strip()
    return out


def describe(cls: type[Method]) -> dict[str, Any]:
    """Plain-data description of a method for listings and docs."""
    return {
        "name": cls.name,
        "summary": cls.summary,
        "exact": cls.exact,
        "devices": list(cls.devices),
        "dtypes": list(cls.dtypes),
        "causal": cls.causal_ok,
        "bidirectional": cls.bidirectional_ok,
        "backward": cls.backward_ok,
        "packages": list(cls.packages),
        "complexity": cls.complexity,
        "options": {o.name: {"default": o.default, "help": o.help} for o in cls.options},
    }


__all__ = [
    "AttentionModule", "Method", "MethodConfigError", "Option", "Problem", "DTYPES", "DTYPE_NAMES",
    "UnknownMethodError", "register", "discover", "all_methods", "get", "parse_method_args",
    "repeat_kv", "padding_bias", "check_inputs", "describe", "load_errors", "ENTRY_POINT_GROUP",
    "builtin_modules",
]
