"""The distillation trainer: a student (the teacher's copy with a method swapped in) learns from the teacher.

The harness names no method. Trainable parts are discovered as the parameters of the per-layer method modules
that `harness.models.swap` installs (submodule `harness_attn` of each attention layer); a method whose modules
have none is refused (`DistillError`). What a module may expose for distillation (the protocol, read-only):

  forward(...)                  its output: MSE against exact attention on the same q, k, v (always).
  last_aux: dict (optional)     set by forward; keys read: 'logits' [B, H, T, K] (log-scores of a compressed
                                attention estimate, preferred) or 'a_hat' [B, H, T, K] (its probabilities). With
                                a gradient, they get 0.1 KL(pool(P) || A_hat) + MSE(A_hat, pool(P)).
  compress_probs(probs, *, causal, valid) (contract) -> [B, H, T, K] or None: exact probabilities in the
                                estimate's cell geometry.
  note_trained(steps) (contract)  told after training steps (so `impl` can say the estimator is trained).
  attention_probs(...) (contract) when its result carries a gradient: 0.1 KL(P || P_method) + MSE; with
                                `attn_rows` N (0 < N < T) on N query rows per layer and step, drawn from
                                (seed, step, layer index) by losses.sample_rows.
  redraw_features() (optional)  called every `redraw_every` steps.

A future contract method `distill_terms(teacher_probs, ...)` could replace the reading of last_aux.

The student trains in eval mode (no dropout: the swap refuses attention dropout). Teacher: the same model with
its own (exact) attention, frozen. Optimizer: AdamW (weight decay 0.01), constant learning rates in three
groups: method-module parameters (lr_method, default 10 x lr), the model's own weights (lr_rest; 0 freezes
them). Gradient clipping, bf16/fp16 autocast (method modules run outside autocast unless method_autocast),
checkpoints (method state as safetensors via swap.save_method_state, optimizer + step via torch.save).

Data parallel (`dist`, a harness.train.ddp.DistEnv from torchrun): the student is wrapped in
DistributedDataParallel for the training forward, every rank trains on its slice of the global batch, each loss
term is weighted by the rank's share of the term's global normaliser (ddp.term_counts) so the averaged gradient
is the single-process one, and the logged values are the global ones. Teacher and student are replicated, so
checkpoints hold the full state and can be resumed with any number of ranks; the caller lets rank 0 write them.

Sharded (`fsdp=True` with `dist`, harness.train.fsdp): the student is sharded with FSDP2 instead (the teacher
stays replicated); the optimizer's groups are built from the sharded parameters, the loss weights are those of
DDP (FSDP averages gradients the same way). Forwards of a sharded student are collective, so every rank calls
`save` (gathers full tensors; rank 0 writes the same files as above) and runs the evaluations (`sharded`).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from harness.train import losses as L


class DistillError(RuntimeError):
    """The distillation cannot run (said in words)."""


@dataclasses.dataclass
class TrainConfig:
    lr: float = 1e-5                 # base learning rate
    lr_method: float | None = None   # method-module parameters (default 10 x lr)
    lr_rest: float = 2e-6            # the model's own weights (0: frozen)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    amp: str = "none"                # none, bf16, fp16
    method_autocast: bool = False    # False: method modules run in their own precision under autocast
    redraw_every: int = 1000         # redraw_features() every N steps (0: never)
    max_attn_tokens: int = 2048      # terms needing T x T attention only when T <= this
    layer_target: str = "self"       # self: exact attention on the student's q, k, v; teacher: the teacher's
    use_attention_probs: bool = True
    attn_rows: int = 0               # attn_kl / attn_mse on this many sampled query rows per layer and step (0: all)
    weights: dict | None = None      # overrides of losses.DEFAULT_WEIGHTS[kind]
    hidden_norm: bool = False        # hidden-state MSE of each layer / the teacher's mean square there (fixed)

    def method_lr(self) -> float:
        return self.lr_method if self.lr_method is not None else 10 * self.lr


def model_kind(model: nn.Module) -> str:
    """'causal' (decoder LM), 'classification' (sequence classifier) or 'encoder' (bare encoder)."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "is_decoder", False) or type(model).__name__.endswith("ForCausalLM"):
        return "causal"
    if type(model).__name__.endswith("ForSequenceClassification"):
        return "classification"
    return "encoder"


def method_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from harness.models.swap import SUBMODULE

    return [(n, m) for n, m in model.named_modules() if n.split(".")[-1] == SUBMODULE]


def _no_autocast(mod: nn.Module, device_type: str) -> None:
    """Run `mod.forward` (and attention_probs) with autocast disabled: the method keeps its own precision."""
    for name in ("forward", "attention_probs"):
        fn = getattr(mod, name)

        def wrapped(*a, _fn=fn, **kw):
            with torch.autocast(device_type=device_type, enabled=False):
                return _fn(*a, **kw)
        setattr(mod, name, wrapped)


class Distiller:
    """Owns teacher, student, optimizer and step. `example` is one batch (dict with input_ids [B, T] and
    optional attention_mask, labels); it builds the per-layer method modules before the optimizer exists."""

    def __init__(self, teacher: nn.Module, method: str, method_args: dict | None, *, example: dict,
                 cfg: TrainConfig | None = None, seq_len: int | None = None, seed: int = 0, dist=None,
                 fsdp: bool = False, fsdp_teacher: str = "auto"):
        from harness.models import swap

        self.cfg = cfg or TrainConfig()
        if self.cfg.attn_rows < 0:
            raise DistillError(f"attn_rows must be >= 0 (0: all query rows); got {self.cfg.attn_rows}")
        if fsdp and dist is None:
            raise DistillError("fsdp shards the student over the ranks of a process group: none was given")
        if fsdp and self.cfg.amp == "fp16":
            raise DistillError("fsdp with fp16 autocast (a gradient scaler over sharded gradients) is not supported;"
                               " use bf16")
        self.method = method
        self.seed = seed
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.kind = model_kind(teacher)
        wkind = "causal" if self.kind == "causal" else "encoder"
        self.weights = {**L.DEFAULT_WEIGHTS[wkind], **(self.cfg.weights or {})}
        self.device = next(teacher.parameters()).device
        self.student = copy.deepcopy(teacher).eval()
        self.handle = swap.attach(self.student, method, method_args or {}, seed=seed,
                                  seq_len=seq_len or example["input_ids"].shape[1])
        self.method_cfg = self.handle.cfg
        with torch.no_grad():                   # build every layer's method module
            self.student(**self._model_inputs(example))
        mods = method_modules(self.student)
        if not mods:
            raise DistillError(f"{method}: no per-layer method modules were built (no attention layer went "
                               "through the swapped attention)")
        self.method_params = [p for _, m in mods for p in m.parameters()]
        if not self.method_params and self.cfg.lr_rest <= 0:
            raise DistillError(f"method '{method}' has no trainable parameters in its per-layer modules and the "
                               f"model's own weights are frozen (lr_rest=0): nothing to train")
        if self.cfg.amp != "none" and not self.cfg.method_autocast:
            for _, m in mods:
                _no_autocast(m, self.device.type)
        self.modules = [m for _, m in mods]
        ids = {id(p) for p in self.method_params}
        for p in self.method_params:
            p.requires_grad_(True)
        self.rest_named = [(n, p) for n, p in self.student.named_parameters() if id(p) not in ids]
        for _, p in self.rest_named:
            p.requires_grad_(self.cfg.lr_rest > 0)
        self.sharded = fsdp
        if fsdp:                                # FSDP2 replaces the parameters by DTensors: regroup by name
            from harness.train import fsdp as F

            method_names = [f"{n}.{pn}" for n, m in mods for pn, _ in m.named_parameters()]
            F.shard_student(self.student, mods, self.device)
            named = dict(self.student.named_parameters())
            self.method_params = [named[n] for n in method_names]
            taken = set(method_names)
            self.rest_named = [(n, p) for n, p in named.items() if n not in taken]
        # the frozen teacher: replicated, or (fsdp, when asked or when it is large for one rank) sharded per layer
        self.teacher_sharded, self.teacher_policy = False, "replicated"
        if fsdp:
            from harness.train import fsdp as F

            choice, why = F.teacher_policy(fsdp_teacher, self.teacher, self.device)
            if choice == "shard":
                F.shard_teacher(self.teacher, self.device)
                self.teacher_sharded = True
            self.teacher_policy = f"{'sharded' if self.teacher_sharded else 'replicated'} ({fsdp_teacher}: {why})"
        groups = [{"params": self.method_params, "lr": self.cfg.method_lr(), "name": "method"}] \
            if self.method_params else []
        if self.cfg.lr_rest > 0:
            groups.append({"params": [p for _, p in self.rest_named], "lr": self.cfg.lr_rest, "name": "rest"})
        self.optimizer = torch.optim.AdamW(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.cfg.amp]
        self.amp_dtype = amp_dtype
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.cfg.amp == "fp16")
        self.step = 0
        self._calls: list[L.LayerCall] = []
        self._recording = False
        self._state: dict = {}
        self.hooks = [m.register_forward_hook(self._hook, with_kwargs=True) for m in self.modules]
        self.dropped: list[str] = []
        self.dist = dist
        self.hidden_scale = self._hidden_scale(example) if self.cfg.hidden_norm else None
        self.ddp = None
        if dist is not None and not fsdp:
            from torch.nn.parallel import DistributedDataParallel

            # broadcasts rank 0's parameters and buffers; averages the gradients in backward. Every trainable
            # parameter must get a gradient each step (find_unused_parameters stays off: estimator parameters may
            # reach the loss only through last_aux / attention_probs, outside the wrapped forward's outputs)
            self.ddp = DistributedDataParallel(
                self.student, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    @torch.no_grad()
    def _hidden_scale(self, example: dict) -> torch.Tensor:
        """Per hidden-state layer, the teacher's mean square on the example batch (real tokens), fixed for the
        run; data parallel: rank 0's values on every rank, so the loss does not depend on the number of ranks."""
        batch = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in example.items()}
        out = self.teacher(**self._model_inputs(batch), output_hidden_states=True)
        mask = batch.get("attention_mask")
        scale = []
        for h in out.hidden_states:                                      # [B, T, C] each
            sq = h.float() ** 2
            if mask is not None:
                m = mask.float()[..., None]
                scale.append((sq * m).sum() / (m.sum() * sq.shape[-1]).clamp(min=1))
            else:
                scale.append(sq.mean())
        scale = torch.stack(scale).clamp(min=1e-12)                      # [layers + 1]
        if self.dist is not None:
            from harness.train import ddp

            scale = ddp.broadcast(self.dist, scale.cpu()).to(self.device)
        return scale

    # --- bookkeeping ------------------------------------------------------------------------------------
    def n_method_params(self) -> int:
        return sum(p.numel() for p in self.method_params)

    def notes(self) -> list[str]:
        return sorted(self._state.get("notes", set())) + list(dict.fromkeys(self.dropped))

    def _hook(self, module, args, kwargs, output):
        if not self._recording:
            return
        q, k, v = args[:3]
        aux = getattr(module, "last_aux", None)
        self._calls.append(L.LayerCall(module=module, q=q, k=k, v=v, causal=bool(kwargs.get("causal")),
                                       key_padding_mask=kwargs.get("key_padding_mask"), scale=kwargs.get("scale"),
                                       out=output, aux=dict(aux) if isinstance(aux, dict) else None))

    def _model_inputs(self, batch: dict) -> dict:
        kw = {"input_ids": batch["input_ids"]}
        if batch.get("attention_mask") is not None:
            kw["attention_mask"] = batch["attention_mask"]
        if self.kind == "causal":
            kw["use_cache"] = False
        return kw

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # --- losses -----------------------------------------------------------------------------------------
    def losses(self, batch: dict, *, scale: dict | None = None,
               _student: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """(total loss with graph, {term: value}) on one batch; per-layer terms are summed over layers.
        `scale` multiplies terms in the total only (data parallel: the rank's share of each term)."""
        batch = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        inputs = self._model_inputs(batch)
        T = batch["input_ids"].shape[1]
        target_layers = None
        with torch.no_grad(), self._autocast():
            if self.cfg.layer_target == "teacher":
                from harness.models.swap import Capture

                with Capture(self.teacher, to_cpu=False) as cap:
                    t_out = self.teacher(**inputs, output_hidden_states=True)
                target_layers = cap.layers
            else:
                t_out = self.teacher(**inputs, output_hidden_states=True)
        self._calls = []
        self._recording = True
        try:
            with self._autocast():
                s_out = (_student or self.student)(**inputs, output_hidden_states=True)
        finally:
            self._recording = False
        calls, self._calls = self._calls, []
        attn_ok = T <= self.cfg.max_attn_tokens
        if not attn_ok:
            self.dropped.append(f"est_kl, est_mse, attn_kl, attn_mse dropped: T={T} > max_attn_tokens="
                                f"{self.cfg.max_attn_tokens} (they need the T x T teacher attention)")
        sampled = attn_ok and self.cfg.use_attention_probs and 0 < self.cfg.attn_rows < T
        if sampled:
            self._state.setdefault("notes", set()).add(
                f"attn_kl, attn_mse on {self.cfg.attn_rows} of T={T} query rows per layer and step (attn_rows; "
                "drawn from seed, step and layer)")
        parts: dict[str, torch.Tensor] = {}
        for i, call in enumerate(calls):
            target = None
            if target_layers is not None:
                t = target_layers[i]
                target = (t.q, t.k, t.v)
            # i: the layer (one recorded call per swapped attention layer, in forward order); self.step: the
            # optimizer steps done, so a resumed run and every rank draw the same rows
            rows = L.sample_rows(T, self.cfg.attn_rows, seed=self.seed, step=self.step, layer=i,
                                 device=self.device) if sampled else None
            for name, val in L.layer_terms(call, target=target, attn_ok=attn_ok,
                                           use_probs=self.cfg.use_attention_probs, state=self._state,
                                           rows=rows).items():
                parts[name] = parts.get(name, 0.0) + val
        tmask = batch.get("attention_mask")
        if getattr(s_out, "hidden_states", None) is not None and getattr(t_out, "hidden_states", None) is not None:
            parts["hidden"] = L.hidden_mse(s_out.hidden_states, t_out.hidden_states, tmask,
                                           scale=self.hidden_scale)
        s_logits = getattr(s_out, "logits", None)
        t_logits = getattr(t_out, "logits", None)
        if s_logits is not None and t_logits is not None:
            parts["logits_kl"] = L.logits_kl(s_logits, t_logits, tmask if s_logits.dim() == 3 else None)
            task = L.task_loss(self.kind, s_logits, batch)
            if task is not None:
                parts["task"] = task
        total = sum(self.weights.get(k, 1.0) * (scale.get(k, 1.0) if scale else 1.0) * v for k, v in parts.items())
        values = {k: float(v.detach()) for k, v in parts.items()}
        values["loss"] = float(total.detach())
        return total, values

    def train_step(self, batch: dict) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        if self.dist is None:
            total, values = self.losses(batch)
            self.scaler.scale(total).backward()
        else:
            values = self._ddp_backward(batch)
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        values["grad_norm"] = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)   # FSDP: a DTensor
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        for m in self.modules:
            m.note_trained(self.step)
        if self.cfg.redraw_every and self.step % self.cfg.redraw_every == 0:
            for m in self.modules:
                if callable(getattr(m, "redraw_features", None)):
                    m.redraw_features()
        return values

    def _ddp_backward(self, batch: dict) -> dict[str, float]:
        """Forward through DDP (or the FSDP student) with each term weighted by world * local count / global count
        (both divide the summed gradients by world), backward; returns the global term values (count-weighted
        over ranks)."""
        from harness.train import ddp

        world = self.dist.world
        counts = ddp.term_counts(self.kind, batch)
        names = sorted(counts)
        totals = dict(zip(names, ddp.all_reduce_sum([counts[n] for n in names], self.device)))
        share = {n: (counts[n] / totals[n] if totals[n] > 0 else 0.0) for n in names}
        student = self.ddp if self.ddp is not None else self.student
        total, local = self.losses(batch, scale={n: world * s for n, s in share.items()}, _student=student)
        self.scaler.scale(total).backward()
        terms = sorted(k for k in local if k != "loss")
        # a term without a known normaliser (none today) counts every rank equally
        reduced = ddp.all_reduce_sum([local[k] * share.get(k, 1.0 / world) for k in terms], self.device)
        values = dict(zip(terms, reduced))
        values["loss"] = sum(self.weights.get(k, 1.0) * v for k, v in values.items())
        return values

    # --- checkpoints ------------------------------------------------------------------------------------
    def save(self, root: Path, *, keep: int = 2, extra: dict | None = None) -> Path | None:
        """root/step-NNNNNNN/{method_state.safetensors, rest.safetensors (if trained), trainer.pt}; written to a
        temporary folder and renamed, so a listed checkpoint is complete. Keeps the newest `keep`. Sharded: every
        rank must call (the full tensors are gathered); rank 0 writes the same files, the others get None."""
        from safetensors.torch import save_file

        from harness.models import swap

        gathered = None
        if self.sharded:
            from harness.train import fsdp as F

            keep_here = self.dist.main
            gathered = {"method": F.gather_named(((f"{m_name}.{k}", v) for m_name, m in method_modules(self.student)
                                                  for k, v in m.state_dict().items()), keep_here),
                        "rest": F.gather_named(self.rest_named if self.cfg.lr_rest > 0 else [], keep_here),
                        "optimizer": F.gather_optimizer(self.optimizer, keep_here)}
            if not keep_here:
                return None
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        final = root / f"step-{self.step:07d}"
        tmp = root / f".tmp-step-{self.step:07d}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        if gathered is not None:
            F.write_method_state(self.student, gathered["method"], tmp / "method_state.safetensors")
        else:
            swap.save_method_state(self.student, tmp / "method_state.safetensors")
        if self.cfg.lr_rest > 0:
            save_file(gathered["rest"] if gathered is not None else
                      {n: p.detach().cpu().contiguous().clone() for n, p in self.rest_named},
                      str(tmp / "rest.safetensors"))
        optimizer = gathered["optimizer"] if gathered is not None else self.optimizer.state_dict()
        torch.save({"step": self.step, "optimizer": optimizer, "scaler": self.scaler.state_dict(),
                    "method": self.method, "method_cfg": json.dumps(self.method_cfg, sort_keys=True, default=str),
                    "extra": extra or {}}, tmp / "trainer.pt")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load(self, ckpt: Path) -> dict:
        """Restore method state, trained model weights, optimizer, scaler and step from a checkpoint folder
        (sharded: every rank reads the full tensors and keeps its shards)."""
        from safetensors.torch import load_file

        from harness.models import swap

        ckpt = Path(ckpt)
        state = torch.load(ckpt / "trainer.pt", map_location=self.device, weights_only=False)
        if state["method"] != self.method:
            raise DistillError(f"{ckpt} holds method {state['method']!r}; this run distills {self.method!r}")
        rest = ckpt / "rest.safetensors"
        if not rest.exists() and self.cfg.lr_rest > 0:
            raise DistillError(f"{ckpt} has no rest.safetensors but lr_rest={self.cfg.lr_rest} trains the model")
        if self.sharded:
            from harness.train import fsdp as F

            tensors = F.read_method_state(self.student, ckpt / "method_state.safetensors")
            if rest.exists():
                names = {n for n, _ in self.rest_named}
                tensors.update({n: t for n, t in load_file(str(rest)).items() if n in names})
            F.load_full(self.student, tensors)
            self.optimizer.load_state_dict(F.shard_optimizer_state(state["optimizer"], self.optimizer))
        else:
            swap.load_method_state(self.student, ckpt / "method_state.safetensors")
            if rest.exists():
                tensors = load_file(str(rest))
                with torch.no_grad():
                    for n, p in self.rest_named:
                        if n in tensors:
                            p.copy_(tensors[n].to(p.device, p.dtype))
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        return state.get("extra", {})

    def close(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint folders under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / "trainer.pt").exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


class MetricsLog:
    """metrics.jsonl: one JSON object per logged step or evaluation (append-only, flushed)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True, default=float) + "\n")
            f.flush()

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


def batch_at(windows: torch.Tensor, step: int, batch: int, seed: int) -> torch.Tensor:
    """The training batch of `step` (0-based): epochs of a seeded permutation of the windows [N, T], so the
    data order depends only on (seed, step) and a resumed run sees what an uninterrupted one would."""
    n = windows.shape[0]
    idx = []
    pos = step * batch
    while len(idx) < batch:
        epoch, off = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        take = min(batch - len(idx), n - off)
        idx.extend(perm[off:off + take].tolist())
        pos += take
    return windows[idx]


def run_loop(d: Distiller, next_batch: Callable[[int], dict], *, steps: int, out: Path, eval_fn=None,
             eval_every: int = 0, save_every: int = 0, log_every: int = 1, quiet: bool = True,
             keep: int = 2, main: bool = True, time_limit: float | None = None) -> dict:
    """Train `d` from its current step up to `steps`; metrics to out/metrics.jsonl, checkpoints to
    out/checkpoints. Returns the last logged values. `main` False (ranks > 0 of a data-parallel run): train
    only; no metrics, evaluations, checkpoints or progress bar; with a sharded student (d.sharded) these ranks
    still take part in evaluations and checkpoints (collective) but log and write nothing.

    `time_limit` (seconds of this call): stop at the first step boundary past it (rank 0's clock decides for
    every rank, so data-parallel ranks stop at the same step); the returned dict then has "time_limited": True.
    When the last step was just evaluated, the returned dict has "evaluated" (eval_fn's values)."""
    import sys

    log = MetricsLog(Path(out) / "metrics.jsonl")
    bar = None
    if not main:
        log_every = 0
        if not d.sharded:
            eval_fn, save_every = None, 0
    if not quiet and main:
        from tqdm import tqdm
        bar = tqdm(total=steps, initial=d.step, desc=f"distill {d.method}", unit="step", dynamic_ncols=True,
                   file=sys.stderr)
    last: dict[str, Any] = {}
    evaluated = None
    started = time.perf_counter()
    while d.step < steps:
        values = d.train_step(next_batch(d.step))
        last = {"step": d.step, **values}
        if log_every and (d.step % log_every == 0 or d.step == steps):
            log.write({**last, "kind": "train", "elapsed_s": round(time.perf_counter() - started, 3)})
        if eval_fn is not None and eval_every and d.step % eval_every == 0 and d.step < steps:
            evaluated = (d.step, eval_fn(d))
            if main:
                log.write({"step": d.step, "kind": "eval", **evaluated[1]})
        if save_every and d.step % save_every == 0 and d.step < steps:
            d.save(Path(out) / "checkpoints", keep=keep)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.4g}")
        if time_limit is not None and d.step < steps:
            over = time.perf_counter() - started >= time_limit
            if d.dist is not None:
                from harness.train import ddp

                over = ddp.broadcast(d.dist, over)
            if over:
                if log_every and d.step % log_every != 0:     # the last step is always in the curve
                    log.write({**last, "kind": "train", "elapsed_s": round(time.perf_counter() - started, 3)})
                last["time_limited"] = True
                break
    if bar is not None:
        bar.close()
    if evaluated is not None and evaluated[0] == d.step:
        last["evaluated"] = evaluated[1]             # the caller need not evaluate this step again
    return last
