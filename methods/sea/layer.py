"""One SEA attention layer: estimate A_hat in O(T), grouped top-k, interpolate, sparse attention, mix.

Shapes: q [B, H, T, D]; k, v [B, Hkv, T, D]; A_hat [B, H, T, K]. The estimator runs in float32; the
sparse attention runs in the input dtype with float32 accumulation; the output has q's dtype.
After each forward `self.last_aux` holds what distillation needs (see `_pipeline`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from kernels.scan import chunked_cumsum
from methods.base import AttentionModule, check_inputs, repeat_kv
from methods.sea.estimator import Estimator
from methods.sea.favor import needs_grad
from methods.sea.interp import (active_tiles, cell_bounds, csr_counts, csr_to_dense, expand_columns, mask_to_csr,
                                nomask_cell_widths, row_lengths, selected_counts)
from methods.sea.topk import select_topk, selection_caps, topk_path

# mix_backend=auto runs the sparse attention and the mix as one kernel (the rows kernel's mix epilogue) for
# bidirectional calls on the rows kernel when True. Measured on an H200 (bf16, B=1, H=16, D=64, SEA fast): 64k 15.74
# -> 15.25 ms eager, 14.38 -> 13.77 ms replayed, 256k 57.86 -> 55.42 ms; MiniLM fidelity unchanged (largest per-layer
# change 5.7e-6 relative): results/nvidia-h200/sea-round19/call5/.
AUTO_ROWS_MIX = True
# mix_backend=auto gives the mix to the shared kernel's epilogue (kernels/sea_shared_attention.py) for bidirectional
# calls with shared_keys on it when True, instead of the tensor ops (a float copy of c, an fp32 [B, H, T, D]
# temporary, addcmul, the cast back: ~0.5 ms at 64k in results/nvidia-h200/sea-shared-keys/call9/'s profile).
AUTO_SHARED_MIX = True
# backend=auto takes the rows kernel for CUDA calls that need gradients too (kernels/sea_sparse_rows_bwd.py: its
# forward with lse, the backward the sparse_backward option names) when True; the row kernel's forward and backward
# otherwise. Measured on an H200: the forward with lse 1.02 against 1.56 ms (8k, same run), 1.11 against 1.77 ms in
# SEA's 32k causal step (results/nvidia-h200/sea-train/).
AUTO_ROWS_GRAD = True
# forward (whole sequence) resolves its finite-input check after queuing its work when True (PendingFiniteCheck);
# at the start, with the host waiting for the device, when False. A switch for same-run A/B measurements.
DEFER_FINITE_CHECK = True
# The causal mean + mix kernel (mix_backend kernel, or auto on CUDA) serves calls that need gradients too when True:
# kernels/sea_causal_mix_grad.py (its forward, two backward launches) in place of ~30 tensor-op kernels.
AUTO_MIX_GRAD = True


# the finite-input check on CUDA by kernels/finite_check.py's kernel when True, by aminmax when False (A/B switch)
FINITE_KERNEL = True
# The bidirectional forward's average context from the block scores in one launch (kernels/sea_column_context.py)
# where the scores are pooled (POOLED_SCORES) and K divides T, instead of the column sums in the top-k stage and
# ~5 tensor ops in average_context: "auto" on CUDA, True wherever Triton runs (the interpreter too), False never.
CONTEXT_KERNEL = "auto"
# Bidirectional shared selections (shared_keys, no padding mask, no gradient, R dividing T) take A_hat's block sums
# from the estimator (Estimator.forward's pool=R: summed in its compiled graph with the softmax) when True, so
# neither the logits nor A_hat ([B, H, T, K] fp32 each) is written; last_aux then holds the block sums
# ('block_scores') and no 'logits' / 'a_hat'. False: A_hat, then block_scores (a same-run A/B switch).
POOLED_SCORES = True


def finite_flags(*tensors: torch.Tensor, copy_to=None) -> torch.Tensor:
    """bool [len(tensors)] tensor on their device: no NaN or Inf in each, without a host sync. On CUDA
    kernels/finite_check.py's kernel (one launch per contiguous tensor: 0.107 against aminmax's 0.335 ms for q, k, v
    at 32k alone on an H200, 0.109 against 0.160 ms inside a 64k forward, results/nvidia-h200/sea-train/call16/,
    call17/); elsewhere aminmax (one read, no temporaries, where isfinite(t).all() ran three passes). copy_to: one
    destination per tensor, filled with its values on the way (the kernel's one pass; see nonfinite_flags)."""
    from kernels.finite_check import nonfinite_flags

    on_cuda = bool(tensors) and tensors[0].is_cuda                     # on CPU (also under the interpreter): aminmax
    return nonfinite_flags(*tensors, backend="auto" if FINITE_KERNEL and on_cuda else "torch", copy_to=copy_to) == 0


def check_finite(**tensors: torch.Tensor) -> None:
    """Raise if a floating tensor holds NaN / Inf, naming it: the flags of all tensors read in one go (the host
    waits for the device here; PendingFiniteCheck is the form that waits later)."""
    PendingFiniteCheck(**tensors).resolve()


class PendingFiniteCheck:
    """check_finite without waiting on the device at its start: the flags of q, k, v are reduced on the GPU and
    copied into pinned host memory behind an event; `resolve()` waits for that event only (the work queued after
    it keeps running) and raises ValueError naming the first non-finite tensor. A check at the start of a forward
    made the host wait for all queued work (in training: the previous step's backward) before it could launch the
    forward, which left the GPU idle for the forward's launch time (~3 ms of SEA's 32k causal training step on an
    H200). copy_to: a destination per tensor (in the keywords' order), filled on the way (finite_flags)."""

    def __init__(self, copy_to=None, **tensors: torch.Tensor):
        self.names = [name for name, t in tensors.items() if t.is_floating_point()]
        if copy_to is not None and len(self.names) != len(tensors):
            raise ValueError("PendingFiniteCheck: copy_to needs floating tensors only")
        flags = finite_flags(*(tensors[name] for name in self.names), copy_to=copy_to) if self.names \
            else torch.ones(0)
        self.event = None
        if flags.is_cuda:
            self.host = torch.empty(flags.shape, dtype=torch.bool, pin_memory=True)
            self.host.copy_(flags, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:                                    # CPU: the flags are computed already; resolve() reads them
            self.host = flags

    def resolve(self) -> None:
        if self.event is not None:
            self.event.synchronize()
        for name, ok in zip(self.names, self.host.tolist()):
            if not ok:
                raise ValueError(f"sea: {name} contains non-finite values (NaN or Inf); refusing to attend")


def pool_columns(probs: torch.Tensor, *, K: int, causal: bool, valid: torch.Tensor | None) -> torch.Tensor:
    """Exact probabilities [B, H, R, T] for query rows 0..R-1 -> compressed [B, H, R, K]: the mass of the keys
    in each cell (cell geometry of interp.cell_bounds). Rows keep their sums."""
    B, H, R, T = probs.shape
    L = row_lengths(B, T, causal=causal, valid=valid, device=probs.device)[:, :R]   # [B, R]
    _, hi = cell_bounds(L, K)                                            # [B, R, K]
    if valid is not None and not causal:
        rank = (valid.long().cumsum(-1) - 1).clamp(min=0)[:, None, :].expand(B, R, T)
    else:
        rank = torch.arange(T, device=probs.device).expand(B, R, T)
    cell = torch.searchsorted(hi.contiguous(), rank.contiguous(), right=True).clamp(max=K - 1)   # [B, R, T]
    out = probs.new_zeros(B, H, R, K)
    return out.scatter_add_(-1, cell[:, None].expand(B, H, R, T), probs)


def causal_mean(v: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Cumulative mean of v over (valid) keys at or before t. v [B, H, T, D] (float32 or float64; the sums
    are in v's dtype)."""
    if valid is not None:
        w = valid[:, None, :, None].to(v.dtype)                          # [B, 1, T, 1]
        return chunked_cumsum(v * w) / chunked_cumsum(w).clamp(min=1)
    n = torch.arange(1, v.shape[2] + 1, device=v.device, dtype=v.dtype)
    return chunked_cumsum(v) / n[:, None]


def _estimator_from_method_state(path: str, layer: int) -> dict:
    """The estimator state_dict of attention layer `layer` in a method-state safetensors file."""
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("method") not in ("sea", "sea-oracle"):
            raise ValueError(f"{path} holds state of method {meta.get('method')!r}, not SEA's")
        layers = json.loads(meta.get("layers", "{}"))                   # layer name -> {"index": i, ...}
        names = [name for name, entry in layers.items() if entry.get("index") == layer]
        if not names:
            have = sorted(entry.get("index") for entry in layers.values())
            raise ValueError(f"{path} has no attention layer {layer} (layers {have})")
        prefix = names[0] + "."
        out = {}
        for key in f.keys():
            rest = key[len(prefix):] if key.startswith(prefix) else ""
            sub, _, param = rest.partition(".")                          # '<submodule>', 'estimator.xxx'
            if sub and param.startswith("estimator."):
                out[param] = f.get_tensor(key)
    if not out:
        raise ValueError(f"{path}: layer {layer} ({names[0]}) holds no estimator weights")
    return out


class SEAAttention(AttentionModule):
    def __init__(self, *, heads: int, head_dim: int, causal: bool, k: int, K: int, mode: str, nbf: float,
                 max_len: int, oracle: bool, backend: str, force_s_prob: float, force_s_mix: float,
                 checkpoint: str | None, layer: int, seed: int, estimator_dtype: str = "fp32",
                 performer_dtype: str = "fp32", interp_backend: str = "auto", topk_backend: str = "auto",
                 scaler_input: str = "shared", performer_backend: str = "auto", encoder_backend: str = "auto",
                 compile: str = "none", query_chunk: int = 0, decoder_backend: str = "auto",
                 query_blocks: int = 0, mix_backend: str = "auto", estimator_precision: str = "fp32",
                 sparse_backward: str = "auto", sparse_pieces: int = 3, cuda_graph: int = 0,
                 shared_keys: int = 0, shared_budget: float = 2.0, shared_span: str = "strided",
                 encoder_operands: str = "fp32", performer_dash: str = "auto", identity_values: str = "concat"):
        super().__init__()
        from methods.sea import SPARSE_BACKWARDS, SPARSE_PIECES
        from methods.sea.graphs import GraphCache

        self.graphs = GraphCache(cuda_graph)     # CUDA-graph replay of inference calls with T <= cuda_graph

        if sparse_backward not in SPARSE_BACKWARDS:
            raise ValueError(f"sparse backward {sparse_backward!r}: expected one of {SPARSE_BACKWARDS}")
        if sparse_pieces not in SPARSE_PIECES:
            raise ValueError(f"sparse_pieces={sparse_pieces!r}: expected one of {SPARSE_PIECES}")
        self.sparse_backward, self.sparse_pieces = sparse_backward, int(sparse_pieces)
        self._pieces_ran = 3                 # what the rows kernels last got (impl names it when not 3)
        if query_chunk < 0 or query_blocks < 0 or (query_chunk and query_blocks):
            raise ValueError(f"query_chunk={query_chunk}, query_blocks={query_blocks}: at most one of them, >= 1 "
                             "(rows per query block, or number of blocks; 0: whole sequence)")
        self.query_chunk, self.query_blocks = query_chunk, query_blocks
        if shared_keys < 0 or (shared_keys and (shared_keys < 16 or shared_keys & (shared_keys - 1))):
            raise ValueError(f"shared_keys={shared_keys}: rows per shared-key block, a power of two >= 16 (0: off)")
        from methods.sea.shared import BIDIRECTIONAL_MODES, SHARED_MODES, SPANS

        if shared_keys and mode not in (SHARED_MODES if causal else BIDIRECTIONAL_MODES):
            raise ValueError(f"shared_keys: causal layers take a per-row top-k mode {SHARED_MODES}, bidirectional "
                             f"ones {BIDIRECTIONAL_MODES}; causal={causal}, mode={mode}")
        if not shared_budget > 0:
            raise ValueError(f"shared_budget={shared_budget}: must be > 0")
        if shared_span not in SPANS or (shared_span != "strided" and not shared_keys):
            raise ValueError(f"shared_span={shared_span!r}: one of {SPANS}; other than strided only with shared_keys")
        if backend == "flex" and shared_span != "blocks":
            raise ValueError("backend=flex computes shared selections with shared_span=blocks only")
        # methods/sea/shared.py: blocks of shared_keys query rows share one selection (0: per-row, the paper's)
        self.shared_keys, self.shared_budget = int(shared_keys), float(shared_budget)
        self.shared_span = shared_span
        if mix_backend not in ("auto", "torch", "kernel", "triton"):
            raise ValueError(f"mix backend {mix_backend!r}: expected auto, torch, kernel or triton")
        self.mix_backend = mix_backend
        self.last_mix = "not-run"
        self.heads, self.head_dim, self.causal = heads, head_dim, causal
        self.k, self.K, self.mode, self.oracle, self.backend = k, K, mode, oracle, backend
        self.force_s_prob, self.force_s_mix = force_s_prob, force_s_mix
        self.interp_backend, self.topk_backend = interp_backend, topk_backend
        self.last_topk = self.last_interp = "not-run"
        self.last_blocks = "off" if query_chunk == query_blocks == 0 else "not-run"
        self.estimator = Estimator(d=head_dim, H=heads, K=K, causal=causal, nbf=nbf, max_len=max_len, seed=seed,
                                   dec_dtype=estimator_dtype, performer_dtype=performer_dtype,
                                   scaler_input=scaler_input, performer_backend=performer_backend,
                                   encoder_backend=encoder_backend, compile=compile,
                                   decoder_backend=decoder_backend, precision=estimator_precision,
                                   encoder_operands=encoder_operands, performer_dash=performer_dash,
                                   identity_values=identity_values)
        # Persistent flag (saved with the module's state): has the estimator been trained or loaded? Mirrored
        # in a Python bool so that forward never reads the buffer (a host sync on CUDA).
        self.register_buffer("estimator_trained", torch.zeros((), dtype=torch.bool))
        self._trained = False
        self._kernel_ran = "not-run"
        self.register_load_state_dict_post_hook(SEAAttention._refresh_trained)
        if checkpoint:
            self.load_estimator(checkpoint, layer)
        self.last_aux: dict = {}
        self.validate_inputs = True          # finite-input check (the host reads a device flag); see _prepare
        self._pending_check: PendingFiniteCheck | None = None
        self.impl = self._impl("not-run")

    def load_estimator(self, path: str, layer: int) -> None:
        """Checkpoint: a torch file holding an Estimator state_dict or {'layers': {layer: state_dict}} (keys may
        carry an 'estimator.' prefix), or a whole model's method-state safetensors file as `harness distill`
        writes it (method_state.safetensors: per attention layer '<layer name>.<submodule>.estimator.*', the
        layers' indices in the file's metadata), from which layer `layer` is taken."""
        if str(path).endswith(".safetensors"):
            ckpt = _estimator_from_method_state(path, layer)
        else:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(ckpt, dict) and "layers" in ckpt:
                layers = ckpt["layers"]
                ckpt = layers[layer] if layer in layers else layers[str(layer)]
        ckpt = {(key[len("estimator."):] if key.startswith("estimator.") else key): val for key, val in ckpt.items()}
        self.estimator.load_state_dict(ckpt)
        self._mark_trained()

    @staticmethod
    def _refresh_trained(module, incompatible_keys) -> None:
        module._trained = bool(module.estimator_trained)
        module.impl = module._impl(module._kernel_ran)

    def _mark_trained(self) -> None:
        self.estimator_trained.fill_(True)
        self._trained = True
        self.impl = self._impl(self._kernel_ran)

    @property
    def trained(self) -> bool:
        return self._trained

    def note_trained(self, steps: int) -> None:
        if steps > 0 and not self._trained:
            self._mark_trained()

    def compress_probs(self, probs, *, causal, valid):
        """Exact probabilities [B, H, T, T] pooled to this layer's K cells (the estimate's geometry)."""
        return pool_columns(probs, K=self.K, causal=causal, valid=valid)

    def pieces_for(self, q: torch.Tensor) -> int:
        """The pieces the rows kernels get for q's dtype (recorded for impl): the sparse_pieces option for bf16 /
        fp16 inputs; 3 for fp32 inputs, whose products run at fp32 accuracy whatever the option says."""
        self._pieces_ran = self.sparse_pieces if q.dtype in (torch.bfloat16, torch.float16) else 3
        return self._pieces_ran

    def _impl(self, kernel: str) -> str:
        self._kernel_ran = kernel
        est = "oracle" if self.oracle else ("trained" if self.trained else "untrained")
        dec = self.estimator.last_decoder
        sc = "estimated" if self.force_s_prob < 0 and self.force_s_mix < 0 else \
            f"forced(s_prob={self.force_s_prob:g}, s_mix={self.force_s_mix:g})"
        enc = self.estimator.last_encoder                # triton: the encoder kernel; triton-head: with the row head
        return (f"sea[estimator={est}, estimator_dtype={self.estimator.dec_dtype}, "
                f"performer={self.estimator.last_performer}"
                f"{'' if self.estimator.performer_dtype == 'fp32' else '/' + self.estimator.performer_dtype}"
                f"{'/fp16dash' if self.estimator.last_dash == 'fp16' else ''}"
                f"{'/identity=kernel' if self.estimator.last_identity == 'kernel' else ''}, "
                f"{'encoder=' + enc + ', ' if enc in ('triton', 'triton-head') else ''}"
                f"{'decoder=' + dec + ', ' if dec in ('triton', 'split', 'head-fused') else ''}"
                f"{'' if self.estimator.compile == 'none' else 'compile=' + self.estimator.compile + ', '}"
                f"{'' if self.estimator.precision == 'fp32' else 'estimator_precision=tf32, '}"
                f"{'' if self.estimator.encoder_operands == 'fp32' else 'encoder_operands=bf16, '}"
                f"mode={self.mode}, topk={self.last_topk}, "
                f"{'interp=triton, ' if self.last_interp == 'triton' else ''}k={self.k}, K={self.K}, "
                f"{'mix=' + self.last_mix + ', ' if self.last_mix in ('fused', 'kernel') else ''}"
                f"{'' if self.last_blocks == 'off' else 'query_blocks=' + self.last_blocks + ', '}"
                f"{self._shared_impl()}"
                f"nb_features={self.estimator.nb_features}, scalers={sc}, sparse={kernel}"
                f"{'/pieces=' + str(self._pieces_ran) if kernel == 'triton_rows' and self._pieces_ran != 3 else ''}"
                f"{'' if self.graphs.max_len == 0 else ', cuda_graph=' + self.graphs.last}]")

    def _shared_impl(self) -> str:
        if not self.shared_keys:
            return ""
        span = "" if self.shared_span == "strided" else f"/{self.shared_span}"
        return f"shared_keys={self.shared_keys}x{self.shared_budget:g}{span}, "

    # --- stages ---------------------------------------------------------------------------------
    # forward = prepare -> stage_estimator -> stage_topk -> stage_interpolate -> stage_sparse -> stage_mix.
    # Each stage takes the previous stages' outputs only, so stage_profile can time them one by one.
    def _prepare(self, q, k, v, *, causal, key_padding_mask, scale, finite_check: bool = True, defer: bool = False):
        """Checks and the per-call constants: (kr, vr [B, H, T, D], valid bool [B, T] or None, scale).
        finite_check=False: the caller checks q, k, v for NaN / Inf itself (query blocks, block by block).
        defer: the finite check is left pending in self._pending_check (PendingFiniteCheck) for the caller to
        resolve once it has queued its work (forward does, also when a later stage fails)."""
        check_inputs(q, k, v)
        # The finite-input check needs the host to read a device flag, which CUDA-graph capture forbids: it is
        # skipped while the current stream is capturing (a replayed graph cannot raise anyway) and when
        # `self.validate_inputs` is False; every normal (eager) call still runs it.
        capturing = q.is_cuda and torch.cuda.is_current_stream_capturing()
        if self.validate_inputs and not capturing and finite_check:
            if defer and DEFER_FINITE_CHECK:
                self._pending_check = PendingFiniteCheck(q=q, k=k, v=v)
            else:
                check_finite(q=q, k=k, v=v)
        B, H, T, D = q.shape
        if causal != self.causal:
            raise ValueError(f"this sea layer was built for causal={self.causal}; called with causal={causal}")
        if H != self.heads or D != self.head_dim:
            raise ValueError(f"this sea layer was built for heads={self.heads}, head_dim={self.head_dim}; "
                             f"got q {tuple(q.shape)}")
        valid = key_padding_mask
        if valid is not None:
            valid = valid.to(torch.bool)
            if valid.shape != (B, T):
                raise ValueError(f"key_padding_mask must be [B, T] = {(B, T)}, got {tuple(valid.shape)}")
        scale = 1.0 / math.sqrt(D) if scale is None else scale
        return repeat_kv(k, H), repeat_kv(v, H), valid, scale

    def pooled_scores(self, q, k, v, *, causal, valid) -> bool:
        """Does this call's estimator return A_hat's block scores in place of A_hat? Shared selections without a
        padding mask or a gradient, not the oracle: bidirectional ones (POOLED_SCORES) whose block size divides T
        (the plain block sums), causal ones in estimator blocks (estimator_rows; the rebinned block scores of
        shared.block_scores, block by block: _causal_block_scores)."""
        return self.pooled_refusal(q, k, v, causal=causal, valid=valid) is None

    def pooled_refusal(self, q, k, v, *, causal, valid) -> str | None:
        """Why pooled_scores is False for this call (None: it is True)."""
        if not self.shared_keys:
            return "no shared keys"
        for why, bad in (("padding mask", valid is not None), ("oracle", self.oracle),
                         ("gradient needed", needs_grad(q, k, v, *self.parameters()))):
            if bad:
                return why
        if causal:
            return None if self.estimator_rows(q) else "no query blocks"
        if not POOLED_SCORES:
            return "POOLED_SCORES off"
        return None if q.shape[2] % self.shared_keys == 0 else f"T={q.shape[2]} not a multiple of {self.shared_keys}"

    @torch.no_grad()
    def _causal_block_scores(self, q, kr, vr, rows: int):
        """Causal shared selection's inputs with the estimator in blocks of `rows` query rows (a multiple of
        shared_keys): per block Estimator.forward_block (the Performer's prefix state and the decoder's last rows
        carried, as the causal query blocks do) and the block's rows pooled into their blocks' scores
        (shared.block_scores with row0); returns (scores fp32 [B, H, ceil(T / R), K], s_prob, s_mix [B, H, T, 1]).
        No [B, H, T, K] tensor: A_hat and its logits exist for one block at a time."""
        from methods.sea.shared import block_scores

        B, H, T, _ = q.shape
        R = self.shared_keys
        kr, vr = kr.contiguous(), vr.contiguous()
        backend = topk_path(self.mode, H=H, K=self.K, valid=None, backend=self.topk_backend, device=q.device)
        # each block's scores and scalers kept and joined once at the end: three launches a call instead of three a
        # block (H200, 16k in 8 blocks: 24 copies took 0.039 ms, results/nvidia-h200/sea-presets/call6/; the call
        # 1.201 -> 1.156 ms, memory unchanged, call7/)
        parts: tuple[list, list, list] = ([], [], [])
        carry = None
        for s in range(0, T, rows):
            e = min(T, s + rows)
            _, a_hat, sp, sm, carry = self.estimator.forward_block(q[:, :, s:e], kr[:, :, s:e], vr[:, :, s:e],
                                                                   row0=s, carry=carry, probs=True)
            for part, t in zip(parts, (block_scores(a_hat, R, backend=backend, T=T, row0=s), sp, sm)):
                part.append(t)
            del a_hat, sp, sm
        self.estimator.last_rows = f"{len(parts[0])} x {rows} rows"
        return tuple(torch.cat(part, dim=2) for part in parts)

    def stage_estimator(self, q, kr, vr, *, causal, valid, scale, pool: int = 0):
        """1-2. A_hat [B, H, T, K] (float32), its logits, and the scalers s_prob, s_mix [B, H, T, 1]. pool = R
        (pooled_scores): (None, A_hat's sums over each block of R rows [B, H, T / R, K], s_prob, s_mix), in blocks
        of estimator_rows query rows where that is set (last_blocks says what ran)."""
        B, H, T, _ = q.shape
        forced = self.force_s_prob >= 0 and self.force_s_mix >= 0
        if pool and self.oracle:
            raise ValueError("stage_estimator: block sums (pool) serve the estimator, not the oracle")
        if pool and causal:                          # the causal estimator in blocks (pooled_scores)
            rows = self.estimator_rows(q)
            if not rows:
                raise ValueError("stage_estimator: causal block scores (pool) come from the estimator in blocks: "
                                 "set query_blocks or query_chunk")
            a_hat, s_prob, s_mix = self._causal_block_scores(q, kr, vr, rows)   # the block scores as a_hat
            self.last_blocks = f"estimator {self.estimator.last_rows}"
            logits = None
        elif self.oracle and forced:                 # the oracle with both scalers forced needs no estimator
            logits = s_prob = s_mix = None
        else:
            # [B, H, T, K] x2, [B, H, T, 1] x2: A_hat by the estimator (in its compiled graph when it has one)
            rows = self.estimator_rows(q)
            logits, a_hat, s_prob, s_mix = self.estimator(q, kr, vr, valid=valid, probs=True, pool=pool,
                                                          rows=rows if pool else 0)
            if rows:
                why = self.pooled_refusal(q, kr, vr, causal=causal, valid=valid)
                self.last_blocks = f"estimator {self.estimator.last_rows if pool else 'whole (' + str(why) + ')'}"
        if self.oracle:
            from methods.exact import softmax_attention_probs
            exact = softmax_attention_probs(q.float(), kr.float(), causal=causal, scale=scale,
                                            key_padding_mask=valid)      # [B, H, T, T]
            a_hat = pool_columns(exact, K=self.K, causal=causal, valid=valid)   # [B, H, T, K]
            logits = torch.log(a_hat.clamp_min(1e-30))
        ones = q.new_ones(B, H, T, 1, dtype=torch.float32)
        if self.force_s_prob >= 0:
            s_prob = ones * self.force_s_prob
        if self.force_s_mix >= 0:
            s_mix = ones * self.force_s_mix
        return logits, a_hat, s_prob, s_mix

    def stage_topk(self, a_hat, *, causal, valid, col_sums: dict | None = None, pooled: bool = False,
                   T: int | None = None):
        """3. grouped top-k -> compressed mask bool [B, H, T, K]; with shared_keys = R the blocks' selection
        bool [B, H, ceil(T / R), K] (methods/sea/shared.py: each block ranks A_hat summed over its rows).
        col_sums: a dict that bidirectional shared selections fill with A_hat's column sums (key 'sum', fp32
        [B, H, K], the sums of the block sums), which average_context then reads instead of A_hat.
        pooled: a_hat holds those block scores already (stage_estimator's pool; causal: T, the sequence length)."""
        B, H, _, K = a_hat.shape
        self.last_topk = topk_path(self.mode, H=H, K=K, valid=valid, backend=self.topk_backend, device=a_hat.device)
        if self.shared_keys:
            from methods.sea.shared import select_blocks

            return select_blocks(None if pooled else a_hat, R=self.shared_keys, mode=self.mode, k=self.k,
                                 budget=self.shared_budget, backend=self.last_topk, causal=causal,
                                 col_sums=col_sums, scores=a_hat if pooled else None, T=T)
        if pooled:
            raise ValueError("stage_topk: block sums (pooled) serve shared selections only")
        return select_topk(a_hat, mode=self.mode, k=self.k, causal=causal, valid=valid, backend=self.last_topk)

    def sparse_plan(self, q, k, v, valid) -> tuple[str, str]:
        """(layout, kernel) for this call: layout 'csr' or 'tiles'; kernel 'triton', 'triton_rows', 'torch' or
        'triton_tiled'. auto: the rows kernel for CUDA calls without a gradient (and with one when AUTO_ROWS_GRAD),
        the row kernel for other calls where Triton runs, torch otherwise. The rows kernel has a backward
        (kernels/sea_sparse_rows_bwd.py: by default the row kernel's, on the rows forward's lse); the tiled kernel
        is forward-only and needs no padding mask, otherwise the row kernel runs and the impl string says why.
        With shared_keys: ('shared', 'triton_shared') (kernels/sea_shared_attention.py reads the blocks' selection)
        for calls without gradients or padding mask when auto resolves to the rows kernel or the backend is triton /
        triton_rows; else the per-row CSR lists of the same selection on the kernel picked here (the tiled kernel
        reads per-row masks: the row kernel instead). With shared_span=blocks: ('flex', 'flex') (FlexAttention on the
        key blocks, methods/sea/flex_shared.py) for calls without gradients or padding mask, with backend flex or
        auto on CUDA; else the per-row lists of the same keys on auto's kernel."""
        from kernels.sea_sparse_attention import triton_usable

        backend = self.backend
        grad = needs_grad(q, k, v)
        if self.shared_keys and self.shared_span == "blocks":
            from methods.sea.flex_shared import flex_usable

            if (backend == "flex" or (backend == "auto" and q.is_cuda)) and not grad and valid is None \
                    and flex_usable(q) is None:
                return "flex", "flex"
            if backend in ("flex", "triton_tiled"):    # the per-row lists of the same keys, on auto's kernel
                backend = "auto"
        if backend == "auto":                      # rows kernel: 2.0x the row kernel at 64k on an H200 (round 9)
            backend = "triton_rows" if q.is_cuda and (AUTO_ROWS_GRAD or not grad) else (
                "triton" if triton_usable(q.device) else "torch")
        if self.shared_keys and self.shared_span == "strided":
            kernel_ok = backend == "triton_rows" if self.backend == "auto" else \
                backend in ("triton", "triton_rows") and triton_usable(q.device)
            if not grad and valid is None and kernel_ok:
                return "shared", "triton_shared"
            if backend == "triton_tiled":
                return "csr", "triton (tiled reads per-row masks)"
        if backend == "triton_rows":
            return "csr", "triton_rows"
        if backend != "triton_tiled":
            return "csr", backend
        if grad:
            return "csr", "triton (tiled is forward-only)"
        if valid is not None:
            return "csr", "triton (tiled needs no padding mask)"
        return "tiles", "triton_tiled"

    def stage_interpolate(self, mask, *, causal, valid, layout, T: int | None = None):
        """4. compressed mask -> the sparse kernel's selection: CSR key lists (layout 'csr') or, for the tiled
        kernel, active key tiles per query block (the kernel re-derives the keys from the mask itself). With
        shared_keys (mask: the blocks' selection [B, H, NB, K]; T: the sequence length): that selection as it is
        (layout 'shared': the shared kernel expands it; count None, shared.shared_row_csr gives the per-row lists) or
        the per-row CSR lists."""
        if self.shared_keys:
            from methods.sea.shared import shared_row_csr

            T = int(T)                           # the blocks' mask does not give it
            self.last_interp = "shared"
            if layout == "shared":               # the kernel reads the blocks' selection itself
                return dict(layout=layout, sel=mask, count=None)
            if layout == "flex":                 # FlexAttention's BlockMask of the key blocks
                from methods.sea.flex_shared import shared_block_mask
                from methods.sea.shared import key_block_width

                H, K = mask.shape[1], mask.shape[3]
                width = key_block_width(T, self.shared_keys, K, bool(causal), self.mode, self.k, H,
                                        self.shared_budget, str(mask.device))
                return dict(layout=layout, sel=mask, count=None, block_mask=shared_block_mask(
                    mask, T=T, R=self.shared_keys, causal=causal, exact_mod=not mask.is_cuda, width=width))
            B, H = mask.shape[:2]
            row_ptr, col = shared_row_csr(mask, T=T, R=self.shared_keys, k=self.k, valid=valid, causal=causal,
                                          span=self.shared_span)
            return dict(layout=layout, row_ptr=row_ptr, col=col, count=csr_counts(row_ptr, (B, H, T)))
        B, H, T, K = mask.shape
        if layout == "tiles":
            from kernels import sea_sparse_attention as ssa
            bm, bn = ssa.TILED_BLOCK_M, ssa.TILED_BLOCK_N
            tiles, ntiles = active_tiles(mask, causal=causal, block_m=bm, block_n=bn)
            return dict(layout=layout, mask=mask, tiles=tiles, ntiles=ntiles, block_m=bm, block_n=bn,
                        count=selected_counts(mask, k=self.k, causal=causal))
        caps = None if valid is not None else selection_caps(self.mode, B=B, H=H, T=T, K=K, k=self.k,
                                                             causal=causal)
        self.last_interp = self.interp_path(mask, caps)
        row_ptr, col = mask_to_csr(mask, k=self.k, causal=causal, valid=valid, caps=caps,
                                   backend=self.last_interp)                      # CSR over (b, h, t)
        return dict(layout=layout, row_ptr=row_ptr, col=col, count=csr_counts(row_ptr, (B, H, T)))

    def interp_path(self, mask: torch.Tensor, caps) -> str:
        """'triton' (kernels/sea_interp.py) or 'torch'. The kernel serves calls without a padding mask (host-side
        caps known); auto takes it there for CUDA tensors (measured faster on an H200, causal T = 16k and 64k:
        results/nvidia-h200/sea-compile/)."""
        if caps is None:
            return "torch"
        if self.interp_backend == "auto":
            return "triton" if mask.is_cuda else "torch"
        return self.interp_backend

    def stage_sparse(self, q, k, v, sel, *, causal, scale, kernel):
        """5. sparse softmax attention over the selected keys -> (c [B, H, T, D] in q's dtype, what ran)."""
        from kernels import sea_sparse_attention as ssa

        if sel["layout"] == "shared":
            from kernels.sea_shared_attention import shared_attention

            return shared_attention(q, k, v, sel["sel"], rows=self.shared_keys, k_sel=self.k, scale=scale,
                                    pieces=self.pieces_for(q), causal=causal), "triton_shared"
        if sel["layout"] == "flex":
            from methods.sea.flex_shared import flex_shared_attention

            return flex_shared_attention(q, k, v, sel["sel"], R=self.shared_keys, scale=scale, causal=causal,
                                         block_mask=sel["block_mask"]), "flex"
        if sel["layout"] == "tiles":
            out = ssa.sparse_attention_tiled(q, k, v, sel["mask"], sel["tiles"], sel["ntiles"], scale,
                                             k_sel=self.k, causal=causal, block_m=sel["block_m"],
                                             block_n=sel["block_n"])
            return out, "triton_tiled"
        if kernel == "triton_rows":                                      # 16 query rows per program
            if needs_grad(q, k, v):
                from kernels.sea_sparse_rows_bwd import sparse_rows_attention

                backward = None if self.sparse_backward == "auto" else self.sparse_backward
                return sparse_rows_attention(q, k, v, sel["row_ptr"], sel["col"], scale, backward,
                                             pieces=self.pieces_for(q)), "triton_rows"
            from kernels.sea_sparse_rows import sparse_rows_forward

            return sparse_rows_forward(q, k, v, sel["row_ptr"], sel["col"], scale,
                                       pieces=self.pieces_for(q)), "triton_rows"
        backend = "triton" if kernel.startswith("triton") else kernel
        c, ran = ssa.sea_sparse_attention(q, k, v, sel["row_ptr"], sel["col"], scale, backend=backend)
        return c, (kernel if kernel.startswith("triton (") else ran)

    def average_context(self, a_hat, vr, *, causal, valid, col_sums=None, weights: bool = True, block_scores=None):
        """6. C_avg: causal -> cumulative mean of v ([B, H, T, D], avg_w None); bidirectional -> the column
        mean of A_hat spread over each cell's keys (avg_w [B, H, 1, T]) times v ([B, H, 1, D]). weights=False:
        avg_w is not made (None) where C_avg does not need it (no padding mask, K dividing T: the forward's case,
        which keeps avg_w in last_aux for nobody; ~12 small launches at 8k). block_scores: A_hat's block sums
        [B, H, NB, K] (pooled scores) in place of a_hat and col_sums; with weights=False and K dividing T one
        kernel makes C_avg from them (context_kernel)."""
        B, H, T, _ = vr.shape
        if causal:
            return causal_mean(vr.float(), valid), None                  # [B, H, T, D]
        if valid is None and col_sums is None and block_scores is not None:
            if not weights and self.context_kernel(vr, T):
                from kernels.sea_column_context import column_context

                return column_context(block_scores, vr), None            # [B, H, 1, D]
            col_sums = block_scores.sum(2)                               # [B, H, K]
        if valid is None:                                                # no [B, H, T, K] temporary
            # col_sums: A_hat's column sums [B, H, K] the top-k stage already made (stage_topk)
            colmean = (a_hat.sum(2, keepdim=True) if col_sums is None else col_sums[:, :, None]) / T   # [B, H, 1, K]
            colmean = colmean / nomask_cell_widths(T, self.K, vr.device)  # mass per key of the cell
        else:
            qv = valid[:, None, :, None].float()
            colmean = (a_hat * qv).sum(2, keepdim=True) / qv.sum(2, keepdim=True).clamp(min=1)   # [B, H, 1, K]
            L = row_lengths(B, T, causal=False, valid=valid, device=vr.device)[:, :1]          # [B, 1]
            lo, hi = cell_bounds(L, self.K)                              # [B, 1, K]
            colmean = colmean / (hi - lo).clamp(min=1)[:, None].float()  # mass per key of the cell
        if valid is None and T % self.K == 0:
            # cells of T / K keys each: the cells' sums of v (fp32 sums of vr's values, no fp32 copy of vr) times
            # the mass per key; the same sum as avg_w @ v in another order
            avg_w = expand_columns(colmean, causal=False, valid=valid, T=T) if weights else None   # [B, H, 1, T]
            cells = vr.reshape(B, H, self.K, T // self.K, vr.shape[-1]).sum(3, dtype=torch.float32)
            return colmean.float() @ cells, avg_w                        # [B, H, 1, D]
        avg_w = expand_columns(colmean, causal=False, valid=valid, T=T)  # [B, H, 1, T]
        return avg_w @ vr.float(), avg_w                                 # [B, H, 1, D]

    def context_kernel(self, vr, T: int) -> bool:
        """Does average_context make C_avg from the block scores in one kernel (CONTEXT_KERNEL; no padding mask, no
        gradient, K dividing T)?"""
        from kernels.sea_column_context import context_usable

        if CONTEXT_KERNEL is False or T % self.K or needs_grad(vr) or not context_usable(vr.device):
            return False
        return CONTEXT_KERNEL is True or vr.is_cuda

    def mix_kernel_usable(self, device) -> bool:
        """Can the causal mean + mix kernel run on this device for this mix_backend? kernel: where Triton runs;
        auto: on CUDA (measured there: 1.56 -> 0.22 ms at 64k on an H200, results/nvidia-h200/sea-rows-mix/)."""
        from kernels.sea_sparse_attention import triton_usable

        if self.mix_backend == "auto":
            return torch.device(device).type == "cuda"
        return self.mix_backend == "kernel" and triton_usable(device)

    def mix_kernel(self, c, vr, s_prob, s_mix, *, causal, valid) -> bool:
        """Does this call mix with kernels/sea_causal_mix.py (mix_backend=kernel, or auto on CUDA)? Causal calls
        without a padding mask where it may run; with a gradient too when AUTO_MIX_GRAD (its backward:
        kernels/sea_causal_mix_grad.py, head dims up to its MAX_D). The tensor ops otherwise (impl says mix=kernel
        when it ran)."""
        if self.mix_backend not in ("kernel", "auto") or not causal or valid is not None:
            return False
        if not self.mix_kernel_usable(c.device):
            return False
        if needs_grad(c, vr, s_prob, s_mix):
            from kernels.sea_causal_mix_grad import MAX_D

            return AUTO_MIX_GRAD and 0 < c.numel() and c.shape[-1] <= MAX_D
        return True

    def stage_mix(self, c, a_hat, s_prob, s_mix, vr, *, causal, valid, out_dtype, col_sums=None, block_scores=None,
                  in_place: bool = False):
        """6-7. out = s_mix s_prob c + (1 - s_mix) C_avg (padded query rows -> 0). Returns (out, c_avg, avg_w), avg_w
        None where C_avg did not need it (average_context's weights=False; attention_probs makes it when asked);
        with mix_backend=kernel (causal, see mix_kernel) one Triton kernel computes the cumulative mean and the mix
        (with a Triton backward when a gradient is needed), and c_avg is not kept (None). in_place: the caller has
        no further use for c, so the forward kernel may write out into c (when c is in out_dtype): one [B, H, T, D]
        tensor less at the peak (the forward's sparse output and its mix)."""
        if self.mix_kernel(c, vr, s_prob, s_mix, causal=causal, valid=valid):
            self.last_mix = "kernel"
            if needs_grad(c, vr, s_prob, s_mix):
                from kernels.sea_causal_mix_grad import causal_mix_grad

                return causal_mix_grad(c, vr, s_prob, s_mix, out_dtype=out_dtype), None, None
            from kernels.sea_causal_mix import causal_mix

            into = c if in_place and c.dtype == out_dtype else None
            return causal_mix(c, vr, s_prob, s_mix, out_dtype=out_dtype, out=into), None, None
        c_avg, avg_w = self.average_context(a_hat, vr, causal=causal, valid=valid, col_sums=col_sums, weights=False,
                                            block_scores=block_scores)
        # one fp32 temporary of [B, H, T, D] besides c_avg: (1 - s_mix) C_avg + (s_mix s_prob) c, with the
        # [B, H, T, 1] factors formed first (c stays in its dtype; addcmul computes in fp32)
        out = torch.addcmul((1 - s_mix) * c_avg, s_mix * s_prob, c.float())   # [B, H, T, D] fp32
        if valid is not None and not causal:
            out = out * valid[:, None, :, None]                          # padded query rows -> 0
        return out.to(out_dtype), c_avg, avg_w

    def _pipeline(self, q, k, v, *, causal, key_padding_mask, scale, layout="csr", defer_check: bool = False):
        """Stages 1-4: what distillation and attention_probs need (logits, a_hat, mask, selection, scalers).
        defer_check: see _prepare's defer."""
        kr, vr, valid, scale = self._prepare(q, k, v, causal=causal, key_padding_mask=key_padding_mask,
                                             scale=scale, defer=defer_check)
        pool = self.shared_keys if self.pooled_scores(q, kr, vr, causal=causal, valid=valid) else 0
        logits, a_hat, s_prob, s_mix = self.stage_estimator(q, kr, vr, causal=causal, valid=valid, scale=scale,
                                                            pool=pool)
        # A_hat's column sums for the average context, unless it comes from the block scores in one kernel
        col = None if pool and self.context_kernel(vr, q.shape[2]) else {}
        # bool [B, H, T, K] (shared: [B, H, NB, K])
        mask = self.stage_topk(a_hat, causal=causal, valid=valid, col_sums=col, pooled=bool(pool), T=q.shape[2])
        sel = self.stage_interpolate(mask, causal=causal, valid=valid, layout=layout, T=q.shape[2])
        aux = dict(logits=logits, a_hat=None if pool else a_hat, block_scores=a_hat if pool else None, mask=mask,
                   row_ptr=sel.get("row_ptr"), col=sel.get("col"), count=sel["count"], s_prob=s_prob, s_mix=s_mix,
                   scale=scale, valid=valid, col_sums=None if col is None else col.get("sum"))
        return aux, sel, vr

    def block_plan(self, q, k, v, *, causal, key_padding_mask) -> str | None:
        """Why this call runs over the whole sequence although query_chunk is set (None: it runs in query blocks).
        Query blocks serve inference calls without a padding mask: causal ones with a per-row top-k mode on the CSR
        kernels (_forward_blocks), bidirectional ones with per_batch / per_head top-k (methods/sea/bidir_blocks.py:
        two passes, an exact threshold from histograms); everything else runs whole, and the impl string says why.
        With shared_keys ("estimator") the call runs whole with its estimator in blocks (estimator_rows)."""
        if self.query_chunk == self.query_blocks == 0:
            return "off"
        if self.shared_keys:                         # shared keys: the estimator in blocks (estimator_rows)
            return "estimator"
        if not causal:
            from methods.sea.bidir_blocks import bidirectional_block_reason

            why = bidirectional_block_reason(self, q, k, v, key_padding_mask=key_padding_mask)
        else:
            why = self.blocks_refusal(q, k, v, key_padding_mask=key_padding_mask,
                                      modes=("per_query", "causal_per_batch"))
        return None if why is None else f"whole ({why})"

    def estimator_rows(self, q) -> int:
        """Rows per block of the estimator in a shared-key call with query blocks (bidirectional: Estimator.forward's
        rows; causal: _causal_block_scores): query_chunk, or ceil(T / query_blocks), rounded up to a multiple of
        shared_keys; 0 elsewhere. The estimate's block scores (what the shared selection ranks) are all the
        estimator hands on, so the selection, the sparse attention and the mix run over the whole sequence
        unchanged, with no [T, K]-sized tensor: the memory of query blocks at the cost of the blocks' launches."""
        if not (self.shared_keys and (self.query_chunk or self.query_blocks)):
            return 0
        rows = self.query_chunk or -(-q.shape[2] // self.query_blocks)
        return -(-rows // self.shared_keys) * self.shared_keys

    def blocks_refusal(self, q, k, v, *, key_padding_mask, modes: tuple) -> str | None:
        """What keeps a call out of query blocks in either direction (None: nothing): a padding mask, a needed
        gradient, the oracle, a top-k mode outside `modes` (the direction's blocked modes), the tiled kernel."""
        if key_padding_mask is not None:
            return "padding mask"
        if needs_grad(q, k, v, *self.parameters()):
            return "gradient needed"
        if self.oracle:
            return "oracle"
        if self.mode not in modes:
            return f"mode {self.mode} (query blocks take {' or '.join(modes)})"
        if self.backend == "triton_tiled":
            return "tiled kernel"
        return None

    @torch.no_grad()
    def _forward_blocks(self, q, k, v, *, scale):
        """Causal inference in query blocks of `query_chunk` rows: estimate, select, interpolate, attend and mix one
        block at a time, carrying the Performer's prefix state, the decoder's last rows and the running sum of v
        from block to block. Same result as the whole-sequence forward up to float summation order (and, with
        bf16 Performer operands, bf16 rounding of the prefix state), with one exception: among cells tied exactly at
        a row's top-k threshold (the causal decoder repeats each of its K/4 columns 4 times, so an untrained
        estimator has many), torch.topk's choice depends on the call (its k is the largest budget in the block), so
        the tensor-op top-k may keep another tied cell than the whole call does; the Triton top-k kernel (the CUDA
        default) breaks ties to the lowest index in both (results/cpu/sea-kernels-fidelity-2/: 0.4-4.5 % per-layer
        output difference on SmolLM2 with the tensor-op top-k). Peak memory O(query_chunk) for the estimate,
        the selection and the lists instead of O(T). No last_aux (distillation and attention_probs run whole).
        The finite-input check runs block by block (isfinite over the whole q, k, v takes temporaries of 1.5x
        their size, more than the blocks' own intermediates), with one host sync at the end: a call with NaN or
        Inf inputs raises the same error as the whole forward, after computing (its output is dropped)."""
        kr, vr, valid, scale = self._prepare(q, k, v, causal=True, key_padding_mask=None, scale=scale,
                                             finite_check=False)
        check = self.validate_inputs and not (q.is_cuda and torch.cuda.is_current_stream_capturing())
        finite = []                                                      # per block: q, k, v all finite?
        kr, vr = kr.contiguous(), vr.contiguous()
        B, H, T, D = q.shape
        _, sparse = self.sparse_plan(q, k, v, None)                      # forward-only here (no_grad)
        fused = self.mix_fused(q, k, v, layout="csr", kernel=sparse, valid=None, causal=True)
        mixk = not fused and self.mix_kernel_usable(q.device)
        self.last_mix = "fused" if fused else ("kernel" if mixk else "torch")
        if mixk:
            from kernels.sea_causal_mix import causal_mix

        def attend(qb, row_ptr, col):                                    # one block's sparse attention
            return self.attend_block(sparse, qb, kr, vr, row_ptr, col, scale)
        out = torch.empty_like(q)
        carry, vsum, ran, n = None, None, "not-run", 0
        rows = self.query_chunk or -(-T // self.query_blocks)               # rows per block
        for s in range(0, T, rows):
            e = min(T, s + rows)
            qb, kb, vb = q[:, :, s:e], kr[:, :, s:e], vr[:, :, s:e]      # [B, H, Tc, D]
            if check:
                finite.append(finite_flags(qb, kb, vb))                  # [3]
            # A_hat [B, H, Tc, K] by the estimator (in its compiled graph when it has one), as in stage_estimator
            _, a_hat, s_prob, s_mix, carry = self.estimator.forward_block(qb, kb, vb, row0=s, carry=carry, probs=True)
            if self.force_s_prob >= 0:                                   # forced scalers, as stage_estimator does
                s_prob = torch.full_like(s_prob, self.force_s_prob)
            if self.force_s_mix >= 0:
                s_mix = torch.full_like(s_mix, self.force_s_mix)
            self.last_topk = topk_path(self.mode, H=H, K=self.K, valid=None, backend=self.topk_backend,
                                       device=q.device)
            mask = select_topk(a_hat, mode=self.mode, k=self.k, causal=True, backend=self.last_topk, row0=s)
            caps = selection_caps(self.mode, B=B, H=H, T=e - s, K=self.K, k=self.k, causal=True, row0=s)
            self.last_interp = self.interp_path(mask, caps)
            row_ptr, col = mask_to_csr(mask, k=self.k, causal=True, caps=caps, backend=self.last_interp, row0=s)
            if mixk:                                                     # cumulative mean + mix in one kernel
                c, ran = attend(qb, row_ptr, col)                        # [B, H, Tc, D]
                out[:, :, s:e], _, vsum = causal_mix(c, vb, s_prob, s_mix, out_dtype=q.dtype, row0=s, v_sum0=vsum,
                                                     want_v_sum=True)    # vsum [B, H, D]: sum of v[0 .. e-1]
                n += 1
                continue
            vf = vb.float()
            csum = chunked_cumsum(vf) if vsum is None else chunked_cumsum(vf) + vsum   # [B, H, Tc, D]
            vsum = csum[:, :, -1:]                                       # [B, H, 1, D] sum of v[0 .. e-1]
            pos = torch.arange(s + 1, e + 1, device=q.device, dtype=torch.float32)[:, None]   # [Tc, 1]
            if fused:                                                    # sparse attention + mix in one kernel
                _, ran = self.sparse_mix(sparse, qb, kr, vr, row_ptr, col, scale, s_prob, s_mix, csum / pos,
                                         out=out[:, :, s:e])
            else:
                c, ran = attend(qb, row_ptr, col)                        # [B, H, Tc, D]
                out[:, :, s:e] = torch.addcmul((1 - s_mix) * (csum / pos), s_mix * s_prob, c.float()).to(q.dtype)
            n += 1
        if check:
            ok = torch.stack(finite).all(0).tolist()                     # one host sync: [q, k, v] finite
            for name, good in zip(("q", "k", "v"), ok):
                if not good:
                    raise ValueError(f"sea: {name} contains non-finite values (NaN or Inf); refusing to attend")
        self.last_blocks = f"{n}x{rows}"
        self.last_aux = {}
        self.impl = self._impl(ran)
        return out

    def attend_block(self, sparse: str, qb, k, v, row_ptr, col, scale):
        """One query block's sparse attention on its CSR lists (query blocks of both directions): qb [B, H, Tc, D]
        against all keys k, v [B, H, T, D] -> (c [B, H, Tc, D], what ran). sparse: sparse_plan's kernel."""
        if sparse == "triton_rows":
            from kernels.sea_sparse_rows import sparse_rows_forward

            return sparse_rows_forward(qb, k, v, row_ptr, col, scale, pieces=self.pieces_for(qb)), "triton_rows"
        from kernels.sea_sparse_attention import sparse_attention_block

        return sparse_attention_block(qb, k, v, row_ptr, col, scale, backend=sparse)

    def _forward_bidirectional_blocks(self, q, k, v, *, scale):
        """Bidirectional inference in query blocks (methods/sea/bidir_blocks.py): the estimator runs two or three
        times (the exact per_batch / per_head threshold needs the whole estimate's histogram first), the
        intermediates take O(block) memory. No last_aux (distillation and attention_probs run whole)."""
        from methods.sea.bidir_blocks import forward_bidirectional_blocks

        rows = self.query_chunk or -(-q.shape[2] // self.query_blocks)
        info: dict = {}
        out = forward_bidirectional_blocks(self, q, k, v, scale=scale, rows=rows, info=info)
        self.last_blocks = f"{info['blocks']}x{rows}, {info['passes']} passes over the estimate"
        self.last_aux = {}
        self.last_topk = "histogram-threshold"
        self.last_mix = info["mix"]
        self.impl = self._impl(info["sparse"])
        return out

    def mix_fused(self, q, k, v, *, layout: str, kernel: str, valid, causal: bool) -> bool:
        """Does this call run the sparse attention and the mix as one kernel (sparse_mix)? mix_backend=triton:
        forward-only calls on the CSR lists with a Triton sparse kernel and no padding mask; auto: the same for
        bidirectional calls on the rows kernel when AUTO_ROWS_MIX (causal calls take the causal mean + mix kernel).
        Layout 'shared' (bidirectional): the shared kernel's epilogue, with triton or (AUTO_SHARED_MIX) auto.
        Other calls take the two steps, and the impl string says which ran (mix=fused)."""
        if layout == "shared":                   # the shared kernel's mix epilogue (bidirectional calls)
            return self.mix_backend in ("triton", "auto") and not causal and valid is None and \
                (AUTO_SHARED_MIX or self.mix_backend == "triton") and not needs_grad(q, k, v, *self.parameters())
        if self.mix_backend not in ("triton", "auto") or layout != "csr" or not kernel.startswith("triton") \
                or valid is not None:
            return False
        if self.mix_backend == "auto" and (causal or kernel != "triton_rows" or not AUTO_ROWS_MIX):
            return False
        return not needs_grad(q, k, v, *self.parameters())

    def sparse_mix(self, kernel: str, q, k, v, row_ptr, col, scale, s_prob, s_mix, c_avg, *, out=None):
        """The sparse attention and the mix in one kernel: the rows kernel's mix epilogue
        (kernels/sea_sparse_rows.py) when `kernel` is triton_rows, the row kernel's (kernels/sea_sparse_mix.py)
        otherwise. Returns (out in q's dtype, the kernel that ran)."""
        if kernel == "triton_rows":
            from kernels.sea_sparse_rows import sparse_rows_forward

            return sparse_rows_forward(q, k, v, row_ptr, col, scale, mix=(s_prob, s_mix, c_avg), out=out,
                                       pieces=self.pieces_for(q)), kernel
        from kernels.sea_sparse_mix import sparse_attention_mix

        return sparse_attention_mix(q, k, v, row_ptr, col, scale, s_prob, s_mix, c_avg, out=out), "triton"

    def stage_sparse_mix(self, q, k, v, sel, a_hat, s_prob, s_mix, vr, *, causal, scale, kernel, col_sums=None,
                         block_scores=None):
        """5-7 in one kernel (mix_fused): out = s_mix s_prob c + (1 - s_mix) C_avg without writing c; sel is
        stage_interpolate's selection (CSR lists, or the blocks' selection of layout 'shared': the shared kernel's
        epilogue). Returns (out in q's dtype, c_avg, avg_w, the kernel that ran), the first three like stage_mix."""
        c_avg, avg_w = self.average_context(a_hat, vr, causal=causal, valid=None, col_sums=col_sums, weights=False,
                                            block_scores=block_scores)
        out, ran = self.attend_and_mix(kernel, q, k, v, sel, scale, s_prob, s_mix, c_avg, causal=causal)
        return out, c_avg, avg_w, ran

    def attend_and_mix(self, kernel: str, q, k, v, sel, scale, s_prob, s_mix, c_avg, *, causal: bool):
        """sparse_mix on stage_interpolate's selection: the CSR lists' kernels, or for layout 'shared' the shared
        kernel with its mix epilogue. Returns (out in q's dtype, the kernel that ran)."""
        if sel["layout"] == "shared":
            from kernels.sea_shared_attention import shared_attention

            return shared_attention(q, k, v, sel["sel"], rows=self.shared_keys, k_sel=self.k, scale=scale,
                                    pieces=self.pieces_for(q), causal=causal, mix=(s_prob, s_mix, c_avg)), \
                "triton_shared"
        return self.sparse_mix(kernel, q, k, v, sel["row_ptr"], sel["col"], scale, s_prob, s_mix, c_avg)

    def forward(self, q, k, v, *, causal: bool, key_padding_mask=None, scale=None):
        if self.graphs.max_len == 0:
            return self._forward_eager(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
        if self.block_plan(q, k, v, causal=causal, key_padding_mask=key_padding_mask) is None:
            self.graphs.last = "eager (query blocks)"
            out = self._forward_eager(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
        else:
            out = self.graphs(self, self._forward_eager, q, k, v, causal=causal, key_padding_mask=key_padding_mask,
                              scale=scale)
        self.impl = self._impl(self._kernel_ran)             # names what the graph cache did
        return out

    def retained_memory_bytes(self) -> int:
        """Device memory the layer's captured CUDA graphs hold between calls (methods/sea/graphs.py)."""
        return self.graphs.retained_bytes()

    def _forward_eager(self, q, k, v, *, causal: bool, key_padding_mask=None, scale=None):
        why = self.block_plan(q, k, v, causal=causal, key_padding_mask=key_padding_mask)
        if why is None and not causal:
            return self._forward_bidirectional_blocks(q, k, v, scale=scale)
        if why is None:
            return self._forward_blocks(q, k, v, scale=scale)
        if why != "off":
            self.last_blocks = why
        self._pending_check = None
        try:
            out = self._forward_whole(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
        except Exception:
            self._resolve_check()                # non-finite inputs: that error rather than a later stage's
            raise
        self._resolve_check()
        return out

    def _resolve_check(self) -> None:
        """Raise if the pending finite check found NaN / Inf in q, k or v (what the call computed is dropped)."""
        pending, self._pending_check = self._pending_check, None
        if pending is not None:
            try:
                pending.resolve()
            except ValueError:
                self.last_aux = {}
                raise

    def _forward_whole(self, q, k, v, *, causal, key_padding_mask, scale):
        """forward over the whole sequence (no query blocks), its finite-input check left pending (defer)."""
        layout, kernel = self.sparse_plan(q, k, v, key_padding_mask)
        aux, sel, vr = self._pipeline(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale,
                                      layout=layout, defer_check=True)
        if self.mix_fused(q, k, v, layout=layout, kernel=kernel, valid=aux["valid"], causal=causal):
            self.last_mix = "fused"
            out, aux["c_avg"], aux["avg_w"], ran = self.stage_sparse_mix(
                q, k, v, sel, aux["a_hat"], aux["s_prob"], aux["s_mix"], vr, causal=causal,
                scale=aux["scale"], kernel=kernel, col_sums=aux["col_sums"], block_scores=aux["block_scores"])
        else:
            self.last_mix = "torch"
            c, ran = self.stage_sparse(q, k, v, sel, causal=causal, scale=aux["scale"], kernel=kernel)
            out, aux["c_avg"], aux["avg_w"] = self.stage_mix(c, aux["a_hat"], aux["s_prob"], aux["s_mix"], vr,
                                                             causal=causal, valid=aux["valid"], out_dtype=q.dtype,
                                                             col_sums=aux["col_sums"],
                                                             block_scores=aux["block_scores"], in_place=True)
            del c
        aux["c_sea"] = out
        aux["call"] = (q, k, v, causal, key_padding_mask, scale, torch.is_grad_enabled())
        self.last_aux = aux
        self.impl = self._impl(ran)
        return out

    @torch.no_grad()
    def stage_profile(self, q, k, v, *, causal, timer, estimator_parts: bool = False):
        """{stage: ms} for one forward without padding: each stage's closure runs on the outputs of the
        previous stages, computed once here. 'estimator' includes the input checks and repeat_kv.
        estimator_parts: also est_{inputs, performer, encoder, decoder, scaler} (Estimator.stage_profile).
        With query blocks (query_chunk) the stages interleave block by block: no profile ({}), rather than the
        whole-sequence stages under the blocked configuration's name."""
        if self.block_plan(q, k, v, causal=causal, key_padding_mask=None) is None:
            return {}
        layout, kernel = self.sparse_plan(q, k, v, None)
        ms = {}

        pool = self.shared_keys if self.pooled_scores(q, k, v, causal=causal, valid=None) else 0

        def estimator():
            kr, vr, valid, scale = self._prepare(q, k, v, causal=causal, key_padding_mask=None, scale=None)
            return (kr, vr, scale) + self.stage_estimator(q, kr, vr, causal=causal, valid=valid, scale=scale,
                                                          pool=pool)

        kr, vr, scale, logits, a_hat, s_prob, s_mix = estimator()      # a_hat: the block sums when pool
        ms["estimator"] = timer(estimator)
        if estimator_parts and not self.oracle:      # where the estimator's time goes (est_* keys)
            parts = self.estimator.stage_profile(q, kr, vr, timer=timer)
            ms.update({f"est_{name}": t for name, t in parts.items()})
        pooled = bool(pool)
        blocks = pooled and self.context_kernel(vr, q.shape[2])      # C_avg from the block scores (as forward)
        col: dict | None = None if blocks else {}
        mask = self.stage_topk(a_hat, causal=causal, valid=None, col_sums=col, pooled=pooled, T=q.shape[2])
        ms["topk"] = timer(lambda: self.stage_topk(a_hat, causal=causal, valid=None, col_sums=None if blocks else {},
                                                   pooled=pooled, T=q.shape[2]))
        scores = a_hat if pooled else None
        if pooled:
            a_hat = None                             # average_context reads the column sums or the block scores
        col_sums = None if col is None else col.get("sum")
        T = q.shape[2]
        sel = self.stage_interpolate(mask, causal=causal, valid=None, layout=layout, T=T)
        ms["interpolate"] = timer(lambda: self.stage_interpolate(mask, causal=causal, valid=None, layout=layout, T=T))
        if self.mix_fused(q, k, v, layout=layout, kernel=kernel, valid=None, causal=causal):
            # one kernel attends and mixes: "sparse_attention" is that kernel, "mix" the average context it reads
            self.last_mix = "fused"
            c_avg, _ = self.average_context(a_hat, vr, causal=causal, valid=None, col_sums=col_sums, weights=False,
                                            block_scores=scores)
            _, ran = self.attend_and_mix(kernel, q, k, v, sel, scale, s_prob, s_mix, c_avg, causal=causal)
            ms["sparse_attention"] = timer(lambda: self.attend_and_mix(kernel, q, k, v, sel, scale, s_prob, s_mix,
                                                                       c_avg, causal=causal)[0])
            ms["mix"] = timer(lambda: self.average_context(a_hat, vr, causal=causal, valid=None, col_sums=col_sums,
                                                          weights=False, block_scores=scores))
            self.impl = self._impl(ran)
            return ms
        c, ran = self.stage_sparse(q, k, v, sel, causal=causal, scale=scale, kernel=kernel)
        ms["sparse_attention"] = timer(lambda: self.stage_sparse(q, k, v, sel, causal=causal, scale=scale,
                                                                 kernel=kernel))
        ms["mix"] = timer(lambda: self.stage_mix(c, a_hat, s_prob, s_mix, vr, causal=causal, valid=None,
                                                 out_dtype=q.dtype, col_sums=col_sums, block_scores=scores))
        self.impl = self._impl(ran)
        return ms

    def stage_profile_backward(self, q, k, v, *, causal, timer):
        """{stage: ms} of the backward of one forward+backward without padding, per differentiable stage:
        estimator (gradients of A_hat, s_prob, s_mix to q, k, v and the estimator's parameters), sparse_attention
        (of c to q, k, v) and mix (of the output to its inputs: c, A_hat, scalers, values). Top-k and
        interpolation have no backward (the selection is not differentiable). The graph is recorded once; each
        stage's backward runs alone with fixed random output gradients (retain_graph)."""
        g = torch.Generator(device="cpu").manual_seed(0)
        with torch.enable_grad():
            q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
            layout, kernel = self.sparse_plan(q, k, v, None)
            kr, vr, valid, scale = self._prepare(q, k, v, causal=causal, key_padding_mask=None, scale=None)
            _, a_hat, s_prob, s_mix = self.stage_estimator(q, kr, vr, causal=causal, valid=valid, scale=scale)
            mask = self.stage_topk(a_hat.detach(), causal=causal, valid=None)
            sel = self.stage_interpolate(mask, causal=causal, valid=None, layout=layout, T=q.shape[2])
            c, ran = self.stage_sparse(q, k, v, sel, causal=causal, scale=scale, kernel=kernel)
            mix_in = [t.detach().requires_grad_() for t in (c, a_hat, s_prob, s_mix, vr)]
            out, _, _ = self.stage_mix(*mix_in, causal=causal, valid=None, out_dtype=q.dtype)
        params = [p for p in self.parameters() if p.requires_grad]

        def backward_of(outputs, inputs):
            outs = [o for o in outputs if o is not None and o.requires_grad]
            grads = [torch.randn(o.shape, generator=g).to(o.device, o.dtype) for o in outs]
            ins = [i for i in inputs if i.requires_grad]
            return lambda: torch.autograd.grad(outs, ins, grads, retain_graph=True, allow_unused=True)

        ms = {}
        if any(o is not None and o.requires_grad for o in (a_hat, s_prob, s_mix)):
            ms["estimator"] = timer(backward_of((a_hat, s_prob, s_mix), [q, k, v, *params]))
        ms["sparse_attention"] = timer(backward_of((c,), [q, k, v]))
        ms["mix"] = timer(backward_of((out,), mix_in))
        self.impl = self._impl(ran)
        return ms

    def _same_call(self, call) -> bool:
        """Did the last forward run on these tensors (by identity) with these settings, and keep a graph if one
        is needed now? Then its selection and scalers are the ones attention_probs would compute again."""
        last = self.last_aux.get("call") if isinstance(self.last_aux, dict) else None
        if last is None:
            return False
        same = all(a is b for a, b in zip(call[:3], last[:3])) and call[3] == last[3] and call[4] is last[4] \
            and call[5] == last[5]
        return same and (last[6] or not torch.is_grad_enabled())

    def attention_probs(self, q, k, v, *, causal, rows, key_padding_mask=None, scale=None):
        """The layer's own distribution for query rows: s_mix s_prob sparse-softmax + (1 - s_mix) average.
        Differentiable (in q, k and the estimator's scalers; the selection itself is not), so distillation can
        match it to the teacher's attention; callers that only measure wrap it in torch.no_grad()."""
        call = (q, k, v, causal, key_padding_mask, scale)
        if self._same_call(call):                # right after forward on these very inputs (distillation): reuse
            aux, vr = self.last_aux, repeat_kv(v, q.shape[1])
        else:                                    # shared keys: the blocks' selection, no per-row lists of all T
            aux, _, vr = self._pipeline(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale,
                                        layout="shared" if self.shared_keys else "csr")
        B, H, T, D = q.shape
        rows = torch.as_tensor(rows, device=q.device).long()
        kr = repeat_kv(k, H).float()
        s = (q[:, :, rows].float() @ kr.transpose(-1, -2)) * aux["scale"]   # [B, H, R, T]
        row_ptr, col = aux["row_ptr"], aux["col"]
        if row_ptr is None and self.shared_keys and self.shared_span == "blocks":   # these rows' key blocks only
            from methods.sea.shared import key_block_rows_mask

            sel = key_block_rows_mask(aux["mask"], rows, T=T, R=self.shared_keys, causal=causal, valid=aux["valid"])
        else:
            if row_ptr is None and self.shared_keys:  # shared_keys on its kernel: the per-row lists of its selection
                from methods.sea.shared import shared_row_csr

                row_ptr, col = shared_row_csr(aux["mask"], T=T, R=self.shared_keys, k=self.k, valid=aux["valid"],
                                              causal=causal, span=self.shared_span)
            sel = csr_to_dense(row_ptr, col, (B, H, T), T, rows=rows)   # bool [B, H, R, T]
        p = torch.nan_to_num(torch.softmax(s.masked_fill(~sel, float("-inf")), -1), nan=0.0)
        s_prob, s_mix = aux["s_prob"][:, :, rows], aux["s_mix"][:, :, rows]   # [B, H, R, 1]
        if causal:
            pos = torch.arange(T, device=q.device)
            vis = (pos[None, :] <= rows[:, None]).float()[None, None]    # [1, 1, R, T]
            if aux["valid"] is not None:
                vis = vis * aux["valid"][:, None, None, :]
            avg = vis / vis.sum(-1, keepdim=True).clamp(min=1)
        else:
            _, avg_w = self.average_context(aux["a_hat"], vr, causal=False, valid=aux["valid"],
                                            col_sums=aux["col_sums"] if aux["valid"] is None else None,
                                            block_scores=aux["block_scores"] if aux["valid"] is None else None)
            avg = avg_w.expand(B, H, len(rows), T)
        return s_mix * s_prob * p + (1 - s_mix) * avg
