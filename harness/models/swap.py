"""Swap the attention of a Hugging Face model for a registered method, by registration.

`attach(model, "performer", {...})` registers an attention function under a name such as
"harness:performer" with `transformers.AttentionInterface` (and a mask builder under the same name with
`AttentionMaskInterface`, so the model hands over a boolean mask, or None where none is needed) and switches
the model to it. For every attention layer the function builds ONE per-layer method module on the layer's
first call (through the registry: `cls.supports`, then `cls.build`) and stores it as a submodule named
`harness_attn` of the layer, so `model.state_dict()` and `model.parameters()` include it.

What reaches the method: q, k, v exactly as the model computed them ([B, H, T, D], rotary embeddings already
applied, k/v with the model's key-value heads), the causal flag (the call's `is_causal`, else the layer's
`is_causal`), a key padding mask bool [B, T] (True = real token) derived from the model's mask, and the model's
softmax scale. A mask that is not "causal or not, plus key padding" (sliding windows, chunked attention, packed
sequences, additive biases such as ALiBi) raises `SwapError` instead of being dropped silently; so do
incremental decoding (queries fewer than keys) and attention dropout.

The harness names no method here: everything goes through `methods.get(name)` and the Method contract.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

import methods
from methods.base import DTYPE_NAMES, Problem

SUBMODULE = "harness_attn"          # attribute name of the per-layer method module inside an attention layer
PREFIX = "harness:"                 # prefix of the attention implementation names registered here
STATE_FORMAT = "harness-method-state/1"

_HANDLE_ATTR = "_harness_swap"      # the live SwapHandle, kept on the model (a plain attribute)
_names_in_use: set[str] = set()
_unique = itertools.count(1)


class SwapError(RuntimeError):
    """The model, its mask or its call cannot be served by the swapped method (said in words)."""


class MethodRefused(SwapError):
    """The method refuses a layer's attention problem; `reasons` are the method's own words."""

    def __init__(self, method: str, problem: Problem, reasons: list[str]):
        self.method = method
        self.problem = problem
        self.reasons = list(reasons)
        super().__init__(f"{method} refuses {_describe_problem(problem)}: {'; '.join(reasons)}")


def _describe_problem(p: Problem) -> str:
    gqa = f"/{p.kv_heads}kv" if p.kv_heads != p.heads else ""
    return (f"H={p.heads}{gqa} D={p.head_dim} T={p.seq_len} {p.dtype} {'causal' if p.causal else 'bidir'}"
            f"{' padded' if p.padding else ''}{' fwd+bwd' if p.backward else ''} on {p.device}")


# --- masks ------------------------------------------------------------------------------------------------

def _mask_builder():
    """The model-side mask builder registered under our names: transformers' boolean SDPA mask (True = attend),
    which is None where the causal flag alone, or nothing, describes the pattern."""
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask


def mask_to_padding(attention_mask: torch.Tensor | None, causal: bool, batch: int, q_len: int, k_len: int
                    ) -> tuple[torch.Tensor | None, bool]:
    """The model's attention mask -> (key_padding_mask bool [B, Tk] or None, causal).

    Accepts a boolean mask (True = attend) or an additive float mask (0 = attend, very negative = masked),
    [B or 1, 1 or H, Tq, Tk]. The mask must equal `padding & causal-triangle` (or `padding` alone); the layer's
    causal flag is tried first, then the other one. Anything else raises SwapError."""
    if attention_mask is None:
        return None, causal
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 4:
        raise SwapError(f"attention mask of type {type(attention_mask).__name__} "
                        f"{tuple(getattr(attention_mask, 'shape', ()))}: expected a 4-D tensor [B, 1, Tq, Tk]")
    if attention_mask.dtype == torch.bool:
        allowed = attention_mask
    elif attention_mask.is_floating_point():
        allowed = attention_mask > torch.finfo(attention_mask.dtype).min / 2
        if (attention_mask[allowed] != 0).any():
            raise SwapError("the attention mask carries additive biases (e.g. ALiBi or relative positions); "
                            "methods take only a causal flag and a key padding mask")
    else:
        raise SwapError(f"attention mask of dtype {attention_mask.dtype}: expected bool or float")
    if allowed.shape[-2:] != (q_len, k_len):
        raise SwapError(f"attention mask {tuple(allowed.shape)} does not match Tq={q_len}, Tk={k_len}")
    if allowed.shape[1] != 1:
        if not (allowed == allowed[:, :1]).all():
            raise SwapError("the attention mask differs between heads; methods take one mask for all heads")
        allowed = allowed[:, :1]
    allowed = allowed.expand(batch, 1, q_len, k_len)                       # [B, 1, Tq, Tk]
    keys = allowed.any(dim=2)[:, 0]                                       # [B, Tk]: some query sees the key
    tri = torch.ones(q_len, k_len, dtype=torch.bool, device=allowed.device).tril(k_len - q_len)   # [Tq, Tk]
    for c in (causal, not causal):
        expected = keys[:, None, None, :] & tri if c else keys[:, None, None, :].expand_as(allowed)
        if torch.equal(expected, allowed):
            return (None if bool(keys.all()) else keys.contiguous()), c
    raise SwapError("the attention mask is neither causal nor bidirectional with key padding (sliding window, "
                    "chunked attention or packed sequences?); methods take only a causal flag and a key padding mask")


# --- attention layers -------------------------------------------------------------------------------------

def _is_attention_layer(module: nn.Module) -> bool:
    """Heuristic for the walk at attach time (only to number layers that carry no `layer_idx`): attention
    modules of transformers models carry `is_causal` and a softmax `scaling`."""
    from transformers import PreTrainedModel

    return (not isinstance(module, PreTrainedModel) and hasattr(module, "is_causal")
            and hasattr(module, "scaling"))


def attention_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of the attention layers found by walking the model, in order."""
    return [(n, m) for n, m in model.named_modules() if _is_attention_layer(m)]


def _set_attn_implementation(model: nn.Module, name: str) -> None:
    """Switch `model` (and its sub-models) to the attention implementation `name`; works on transformers 5.x
    through `set_attn_implementation`, and falls back to the config attribute where a sub-model was skipped."""
    from transformers import PreTrainedModel

    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter(name)
    for sub in model.modules():
        if isinstance(sub, PreTrainedModel) and sub.config._attn_implementation != name:
            sub.config._attn_implementation = name
    bad = [type(s).__name__ for s in model.modules()
           if isinstance(s, PreTrainedModel) and s.config._attn_implementation != name]
    if bad:
        raise SwapError(f"could not switch {', '.join(bad)} to attention implementation {name!r}")


def _config_seq_len(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@dataclasses.dataclass
class LayerInfo:
    name: str          # qualified module name inside the model
    index: int         # layer index: module.layer_idx, else the order of the walk at attach time
    problem: Problem   # the problem the method module was built for


class SwapHandle:
    """A method attached to one model. `detach()` restores the model's previous attention."""

    def __init__(self, model: nn.Module, method_name: str, cfg: dict[str, Any], *, seed: int,
                 seq_len: int | None, name: str):
        self.model = model
        self.method_name = method_name
        self.method = methods.get(method_name)
        self.cfg = cfg
        self.seed = seed
        self.seq_len = seq_len
        self.name = name
        self.previous: str | None = getattr(getattr(model, "config", None), "_attn_implementation", None)
        self.layers: dict[int, LayerInfo] = {}          # id(attention module) -> info (built layers)
        self._names: dict[int, str] = {}
        self._order: dict[int, int] = {}
        self._checked: set[tuple] = set()
        self.calls = 0
        self.attached = False
        for i, (n, m) in enumerate(attention_layers(model)):
            self._names[id(m)] = n
            self._order[id(m)] = i

    # -- per-layer module -----------------------------------------------------------------------------
    def _layer_index(self, module: nn.Module) -> int:
        idx = getattr(module, "layer_idx", None)
        if isinstance(idx, int):
            return idx
        if id(module) not in self._order:
            self._order[id(module)] = len(self._order)
        return self._order[id(module)]

    def _layer_name(self, module: nn.Module) -> str:
        if id(module) not in self._names:
            for n, m in self.model.named_modules():
                if m is module:
                    self._names[id(module)] = n
                    break
            else:
                raise SwapError(f"attention module {type(module).__name__} is not part of the attached model")
        return self._names[id(module)]

    def _check(self, problem: Problem) -> None:
        key = dataclasses.astuple(problem)
        if key in self._checked:
            return
        reasons = self.method.supports(problem, self.cfg)
        if reasons:
            raise MethodRefused(self.method_name, problem, reasons)
        self._checked.add(key)

    def build_layer(self, module: nn.Module, problem: Problem) -> nn.Module:
        """Build (after the method's support check) and install the method module of one attention layer."""
        self._check(problem)
        idx = self._layer_index(module)
        mod = self.method.build(self.cfg, problem, layer=idx, seed=self.seed).to(problem.device)
        mod.train(module.training)
        module.add_module(SUBMODULE, mod)
        self.layers[id(module)] = LayerInfo(self._layer_name(module), idx, problem)
        return mod

    def module_for(self, module: nn.Module, q: torch.Tensor, k: torch.Tensor, *, causal: bool,
                   padding: bool) -> nn.Module:
        B, H, T, D = q.shape
        backward = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
        call = Problem(batch=B, heads=H, kv_heads=k.shape[1], seq_len=T, head_dim=D,
                       dtype=DTYPE_NAMES.get(q.dtype, str(q.dtype)), causal=causal, device=q.device.type,
                       backward=backward, padding=padding)
        mod = module._modules.get(SUBMODULE)
        info = self.layers.get(id(module))
        if mod is None or info is None:
            built = dataclasses.replace(call, seq_len=max(self.seq_len or T, T))
            return self.build_layer(module, built)
        p = info.problem
        if (p.heads, p.kv_heads, p.head_dim, p.causal) != (H, k.shape[1], D, causal):
            raise SwapError(f"layer {info.name} was built for {_describe_problem(p)}, called with "
                            f"{_describe_problem(call)}")
        self._check(call)          # this call's length, padding, dtype and direction
        return mod

    # -- the registered attention function -------------------------------------------------------------
    def attention(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                  **kwargs) -> tuple[torch.Tensor, None]:
        B, H, Tq, D = query.shape                                          # [B, H, Tq, D]
        Tk = key.shape[2]
        if Tq != Tk:
            raise SwapError(f"{self.name}: {Tq} queries against {Tk} keys (incremental decoding with a cache or "
                            "cross-attention) is not supported; run full sequences with use_cache=False")
        if dropout and dropout > 0:
            raise SwapError(f"{self.name}: attention dropout={dropout} is not supported (call model.eval())")
        is_causal = kwargs.get("is_causal")
        causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)
        kpm, causal = mask_to_padding(attention_mask, causal, B, Tq, Tk)
        mod = self.module_for(module, query, key, causal=causal, padding=kpm is not None)
        out = mod(query, key, value, causal=causal, key_padding_mask=kpm, scale=scaling)   # [B, H, T, D]
        self.calls += 1
        return out.transpose(1, 2).contiguous(), None                      # [B, T, H, D]

    # -- bookkeeping -------------------------------------------------------------------------------------
    def impls(self) -> list[str]:
        """Distinct `impl` strings of the built layer modules (what actually ran)."""
        out = []
        for m in self.model.modules():
            mod = m._modules.get(SUBMODULE)
            impl = getattr(mod, "impl", "") if mod is not None else ""
            if impl and impl not in out:
                out.append(impl)
        return out

    def impl_summary(self, limit: int = 2) -> str:
        """The distinct impl strings, at most `limit` of them spelled out."""
        impls = self.impls()
        text = ", ".join(impls[:limit])
        return text + (f" (+{len(impls) - limit} more distinct per-layer impls)" if len(impls) > limit else "")

    def detach(self) -> None:
        """Remove the method modules, restore the previous attention implementation, unregister our names."""
        if not self.attached:
            return
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        for m in self.model.modules():
            if SUBMODULE in m._modules:
                del m._modules[SUBMODULE]
        if self.previous is not None:
            _set_attn_implementation(self.model, self.previous)
        AttentionInterface._global_mapping.pop(self.name, None)
        AttentionMaskInterface._global_mapping.pop(self.name, None)
        _names_in_use.discard(self.name)
        if getattr(self.model, _HANDLE_ATTR, None) is self:
            del self.model.__dict__[_HANDLE_ATTR]
        self.layers.clear()
        self.attached = False

    def __enter__(self) -> "SwapHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


def attach(model: nn.Module, method_name: str, method_args: dict[str, Any] | None = None, *, seed: int = 0,
           seq_len: int | None = None) -> SwapHandle:
    """Swap `model`'s attention for `method_name` with options `method_args` (raw strings or values).

    `seq_len` is the length the per-layer modules are built for (some methods size state by it); default: the
    model's max positions, or the first call's T. Refusals surface as MethodRefused on the layer's first call,
    bad options as methods.MethodConfigError here. Returns the handle (also a context manager)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    old = getattr(model, _HANDLE_ATTR, None)
    if old is not None:
        old.detach()
    cls = methods.get(method_name)
    cfg = cls.resolve_config(method_args or {})
    name = registered_name(method_name)
    if name in _names_in_use:
        name = f"{name}#{next(_unique)}"
    handle = SwapHandle(model, method_name, cfg, seed=seed, seq_len=seq_len or _config_seq_len(model), name=name)
    AttentionInterface.register(name, handle.attention)
    AttentionMaskInterface.register(name, _mask_builder())
    _names_in_use.add(name)
    handle.attached = True
    try:
        _set_attn_implementation(model, name)
    except Exception:
        handle.detach()
        raise
    model.__dict__[_HANDLE_ATTR] = handle
    return handle


def registered_name(method_name: str) -> str:
    """'harness:<method>', with the substrings transformers reads meaning into ('flash' selects flash-attention
    code paths, 'sdpa' the SDPA dispatch checks, 'flex_attention' FlexAttention's) upper-cased (its checks are
    case-sensitive)."""
    safe = method_name
    for word in ("flash", "sdpa", "flex_attention", "paged", "eager"):
        safe = safe.replace(word, word.upper())
    return f"{PREFIX}{safe}"


def handle_of(model: nn.Module) -> SwapHandle | None:
    return getattr(model, _HANDLE_ATTR, None)


def detach(model: nn.Module) -> None:
    handle = handle_of(model)
    if handle is not None:
        handle.detach()


# --- capture ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class CapturedLayer:
    name: str
    index: int
    q: torch.Tensor          # [B, H, T, D], post-RoPE, as the model computed it
    k: torch.Tensor          # [B, Hkv, T, D]
    v: torch.Tensor          # [B, Hkv, T, D]
    causal: bool
    scale: float | None
    key_padding_mask: torch.Tensor | None   # bool [B, T] or None


class Capture:
    """Context manager that records every attention call's q, k, v (detached copies) while the model runs its
    attention as plain softmax attention through torch SDPA with the model's own mask and scale.

        with Capture(model) as cap:
            model(ids)
        cap.layers  # list of CapturedLayer in call order
    """

    def __init__(self, model: nn.Module, *, to_cpu: bool = True):
        self.model = model
        self.to_cpu = to_cpu
        self.layers: list[CapturedLayer] = []
        self.name = f"{PREFIX}capture#{next(_unique)}"
        self._names = {id(m): n for n, m in model.named_modules()}
        self._order = {id(m): i for i, (_, m) in enumerate(attention_layers(model))}
        self.previous = getattr(getattr(model, "config", None), "_attn_implementation", None)

    def attention(self, module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        B, H, Tq, D = query.shape                                          # [B, H, Tq, D]
        Tk = key.shape[2]
        if Tq != Tk:
            raise SwapError(f"capture: {Tq} queries against {Tk} keys is not supported (use_cache=False)")
        is_causal = kwargs.get("is_causal")
        causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)
        kpm, causal = mask_to_padding(attention_mask, causal, B, Tq, Tk)
        idx = getattr(module, "layer_idx", None)
        idx = idx if isinstance(idx, int) else self._order.get(id(module), len(self.layers))

        def keep(t):
            t = t.detach()
            return t.to("cpu").clone() if self.to_cpu else t.clone()

        self.layers.append(CapturedLayer(self._names.get(id(module), ""), idx, keep(query), keep(key), keep(value),
                                         causal, scaling, None if kpm is None else keep(kpm)))
        rep = H // key.shape[1]
        k = key.repeat_interleave(rep, dim=1) if rep > 1 else key          # [B, H, T, D]
        v = value.repeat_interleave(rep, dim=1) if rep > 1 else value
        mask = None
        if kpm is not None:
            mask = kpm[:, None, None, :]                                   # [B, 1, 1, T]
            if causal:
                mask = mask & torch.ones(Tq, Tk, dtype=torch.bool, device=query.device).tril()
        out = torch.nn.functional.scaled_dot_product_attention(
            query, k, v, attn_mask=mask, is_causal=causal and mask is None, scale=scaling)   # [B, H, T, D]
        return torch.nan_to_num(out).transpose(1, 2).contiguous(), None   # [B, T, H, D]

    def __enter__(self) -> "Capture":
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        if handle_of(self.model) is not None:
            raise SwapError("a method is attached to this model; detach it before capturing")
        AttentionInterface.register(self.name, self.attention)
        AttentionMaskInterface.register(self.name, _mask_builder())
        _set_attn_implementation(self.model, self.name)
        return self

    def __exit__(self, *exc) -> None:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        if self.previous is not None:
            _set_attn_implementation(self.model, self.previous)
        AttentionInterface._global_mapping.pop(self.name, None)
        AttentionMaskInterface._global_mapping.pop(self.name, None)


# --- state --------------------------------------------------------------------------------------------------

def save_method_state(model: nn.Module, path: str | Path) -> Path:
    """Write every per-layer method module's state_dict to one safetensors file (keys are the model's own
    state_dict keys, e.g. 'model.layers.0.self_attn.harness_attn.proj'), with the method, its config, the
    seed and each layer's build problem in the metadata so `load_method_state` can rebuild missing layers."""
    handle = handle_of(model)
    if handle is None:
        raise SwapError("no method is attached to this model")
    tensors: dict[str, torch.Tensor] = {}
    for module_id, info in handle.layers.items():
        module = next(m for n, m in model.named_modules() if n == info.name)
        mod = module._modules[SUBMODULE]
        for key, value in mod.state_dict().items():
            tensors[f"{info.name}.{SUBMODULE}.{key}"] = value.detach().to("cpu").clone().contiguous()
    return write_method_state(handle, tensors, path)


def write_method_state(handle: SwapHandle, tensors: dict[str, torch.Tensor], path: str | Path) -> Path:
    """The method-state file of `handle`'s layers from full CPU tensors keyed by the model's state_dict keys
    (tensors of other modules are left out); also used by sharded training, which gathers them first."""
    from safetensors.torch import save_file

    out, layers = {}, {}
    for info in handle.layers.values():
        prefix = f"{info.name}.{SUBMODULE}."
        out.update({k: v for k, v in tensors.items() if k.startswith(prefix)})
        layers[info.name] = {"index": info.index, "problem": dataclasses.asdict(info.problem)}
    meta = {"format": STATE_FORMAT, "method": handle.method_name,
            "config": json.dumps(handle.cfg, sort_keys=True, default=str), "seed": str(handle.seed),
            "layers": json.dumps(layers, sort_keys=True)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata=meta)
    return path


def check_method_state(handle: SwapHandle, path: str | Path) -> dict:
    """The metadata of a method-state file, after checking that it holds `handle`'s method and config."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != STATE_FORMAT:
        raise SwapError(f"{path} is not a method-state file (format {meta.get('format')!r})")
    if meta["method"] != handle.method_name:
        raise SwapError(f"{path} holds state of method {meta['method']!r}; {handle.method_name!r} is attached")
    stored_cfg = json.loads(meta["config"])
    attached_cfg = json.loads(json.dumps(handle.cfg, sort_keys=True, default=str))
    if stored_cfg != attached_cfg:
        raise SwapError(f"{path} was saved with config {stored_cfg}; the attached config is {attached_cfg}")
    return meta


def load_method_state(model: nn.Module, path: str | Path, *, strict: bool = True) -> SwapHandle:
    """Load a file written by `save_method_state` into the method attached to `model` (the same method and
    config must be attached; layers not built yet are built from the stored problems first)."""
    from safetensors.torch import load_file

    handle = handle_of(model)
    if handle is None:
        raise SwapError("attach the method first (load_method_state fills the attached method's layers)")
    path = Path(path)
    meta = check_method_state(handle, path)
    tensors = load_file(str(path))
    modules = dict(model.named_modules())
    used = set()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for name, entry in json.loads(meta["layers"]).items():
        if name not in modules:
            raise SwapError(f"{path}: layer {name!r} is not in this model")
        module = modules[name]
        if module._modules.get(SUBMODULE) is None or id(module) not in handle.layers:
            problem = Problem(**{**entry["problem"], "device": device.type})
            handle.build_layer(module, problem)
        prefix = f"{name}.{SUBMODULE}."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        used.update(prefix + k for k in sd)
        missing, unexpected = module._modules[SUBMODULE].load_state_dict(sd, strict=strict)
        del missing, unexpected
    left = set(tensors) - used
    if strict and left:
        raise SwapError(f"{path}: tensors for no stored layer: {sorted(left)[:5]}")
    return handle


__all__ = ["attach", "detach", "handle_of", "SwapHandle", "SwapError", "MethodRefused", "mask_to_padding",
           "attention_layers", "save_method_state", "load_method_state", "write_method_state",
           "check_method_state", "SUBMODULE"]
