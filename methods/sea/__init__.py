"""`sea` and `sea-oracle`: SEA, Sparse Linear Attention with Estimated Attention Mask (Lee et al., ICLR 2024).

Per layer: a FAVOR+ context of (q, k, [V_I ; v]) feeds a small MLP + CNN that predicts a compressed
attention map A_hat [B, H, T, K]; grouped top-k picks cells, each cell is interpolated to at most k
keys, and softmax attention runs over those keys only (kernels/sea_sparse_attention.py), scaled by
s_prob and mixed with an average context by s_mix. `sea-oracle` replaces A_hat by the exact attention
pooled into K columns (O(T^2): an upper bound on what the estimator can reach).

Modules: favor.py (FAVOR+), estimator.py (encoder/decoder), topk.py (grouped top-k),
interp.py (compressed mask -> key index lists), layer.py (the AttentionModule).
This package imports no Triton at module level.
"""
from __future__ import annotations

import os

from methods.base import Method, MethodConfigError, Option, register

# values of the sparse_backward option (the SEA layer checks them too): auto = the kernel module's BACKWARD
SPARSE_BACKWARDS = ("auto", "row", "keys", "rows", "keys_rows")
# values of the sparse_pieces option (kernels/sea_sparse_rows.py's PIECES_CHOICES)
SPARSE_PIECES = (1, 2, 3)

MODES = ("auto", "per_query", "per_head", "per_batch", "causal_per_batch")
DEFAULTS = {True: dict(k=64, K=64, mode="causal_per_batch", nbf=8.0),
            False: dict(k=13, K=128, mode="per_batch", nbf=1.0)}


# "auto" of the options a preset sets per direction: {option: (causal value, bidirectional value)}. shared_span:
# key blocks on FlexAttention won causally and lost bidirectionally (H200, 64k: 0.167x -> 0.159x cuDNN causal,
# 0.195x -> 0.239x bidirectional, results/nvidia-h200/sea-flex-blocks/); the other two are the bidirectional
# estimator's (causal layers refuse them).
AUTO_BY_DIRECTION = {"shared_span": ("blocks", "strided"), "encoder_operands": ("fp32", "bf16"),
                     "identity_values": ("concat", "kernel")}

# preset=NAME: these option values, under any option given explicitly (each option quality-gated on real q/k/v,
# results/nvidia-h200/sea-speed-notes.md). "train": the forward+backward configuration (H200, causal 32k: 0.434x
# SDPA-flash's time, results/nvidia-h200/sea-presets/call5/); "fast": the forward (inference) latency configuration,
# train's options plus shared key selections (with gradients those run as per-row lists of twice a row's cells:
# 1.30x SDPA-flash in the same 32k forward+backward cell); "lean": fast with the estimator in 8 blocks of query rows
# (1.17x causal, 1.47x bidirectional SDPA-flash's peak memory, results/nvidia-h200/sea-presets/call8/). nbf=8 (33
# Performer features at d = 64, the causal default) is left out where a checkpoint is given: a trained estimator keeps
# the feature count it was trained with.
TRAIN = dict(performer_dtype="bf16", estimator_precision="tf32", estimator_dtype="bf16", compile="estimator",
             sparse_pieces=1)
FAST = dict(TRAIN, shared_keys=64, shared_span="auto", encoder_operands="auto", identity_values="auto", nbf=8.0)
PRESETS = {"none": {}, "train": TRAIN, "fast": FAST, "lean": {**FAST, "query_blocks": 8}}


def preset_values(preset: str, checkpoint) -> dict:
    """The option values preset=NAME sets; nbf left out where a checkpoint is given (its feature count stands)."""
    values = dict(PRESETS[preset])
    if checkpoint:
        values.pop("nbf", None)
    return values


def resolved(cfg, causal: bool) -> dict:
    """Options with 0 / 'auto' replaced by the direction's defaults (AUTO_BY_DIRECTION for the preset's autos)."""
    d = DEFAULTS[causal]
    out = dict(k=cfg["k"] or d["k"], K=cfg["K"] or d["K"], mode=d["mode"] if cfg["mode"] == "auto" else cfg["mode"],
               nbf=cfg["nbf"] or d["nbf"])
    for key, (causal_value, bidir_value) in AUTO_BY_DIRECTION.items():
        out[key] = (causal_value if causal else bidir_value) if cfg[key] == "auto" else cfg[key]
    if not cfg["shared_keys"]:
        out["shared_span"] = "strided"                                   # no shared selection: the span is unused
    return out


class _SEABase(Method):
    exact = False
    dtypes = ("fp32", "fp16", "bf16")
    oracle = False
    complexity = "O(T (k + m) D) estimate + sparse; O(T W) index lists"
    options = (
        Option("preset", "none", "a named set of the options below, under any of them given explicitly (H200, "
               "bf16, B=1, H=16, D=64, under the harness's --cuda-graph, results/nvidia-h200/sea-presets/): train "
               "(performer_dtype=bf16, estimator_precision=tf32, estimator_dtype=bf16, compile=estimator, "
               "sparse_pieces=1; causal 32k forward+backward 0.43x SDPA-flash), fast (for inference: train's plus "
               "shared_keys=64, shared_span / encoder_operands / identity_values=auto, nbf=8 unless a checkpoint is "
               "given; forward, causal 0.66x / 0.15x / 0.035x cuDNN at 16k / 64k / 256k at 5.0x SDPA-flash's peak "
               "memory, bidirectional 0.89x / 0.082x at 8k / 64k at 9.8x; with gradients 1.3x SDPA-flash at causal "
               "32k: use train there), lean (fast with query_blocks=8: 1.17x causal, 1.47x bidirectional "
               "SDPA-flash's memory; causal 0.91x / 0.18x at 16k / 64k, bidirectional 1.35x / 0.093x at 8k / 64k) "
               "or none (the paper's configuration)", choices=tuple(PRESETS)),
        Option("k", 0, "keys per query budget (0: 64 causal, 13 bidirectional); may exceed the trained k"),
        Option("K", 0, "compressed width of A_hat (0: 64 causal, 128 bidirectional); multiple of 4"),
        Option("mode", "auto", "grouped top-k: auto (causal_per_batch causal, per_batch bidirectional), "
               "per_query, per_head, per_batch, causal_per_batch", choices=MODES),
        Option("nbf", 0.0, "Performer feature factor: m = int(d ln d / nbf) (0: 8 causal, 1 bidirectional)"),
        Option("max_len", 32768, "longest sequence (size of the causal learned V_I)"),
        Option("checkpoint", None, "estimator weights: a torch file, or the method_state.safetensors of a "
               "`harness distill` run (None: untrained estimator)"),
        Option("checkpoint_layer", -1, "which attention layer of a whole-model checkpoint to load (-1: the layer "
               "being built; a sweep builds layer 0)"),
        Option("backend", "auto", "sparse attention: auto (triton_rows on CUDA, the row kernel on "
               "TRITON_INTERPRET, else torch), triton (one program per query "
               "row, CSR lists), triton_tiled (forward-only, blocks of query rows with tl.dot over active key "
               "tiles; the row kernel runs when grads or a padding mask are needed, and impl says so), triton_rows "
               "(16 query rows per program walking their consecutive CSR entries with tl.dot, "
               "kernels/sea_sparse_rows.py; with gradients its forward keeps the lse and the backward of "
               "sparse_backward runs on it, kernels/sea_sparse_rows_bwd.py; on an H200 2.0x the row kernel's "
               "forward at 64k causal, results/nvidia-h200/sea-rows-mix/; the forward with lse 1.77 -> 1.11 ms "
               "in the 32k causal forward+backward, results/nvidia-h200/sea-train/), torch, flex (FlexAttention; "
               "shared_span=blocks only, which auto runs on it on CUDA)",
               choices=("auto", "triton", "triton_tiled", "triton_rows", "torch", "flex")),
        Option("estimator_dtype", "fp32", "dtype of the estimator's CNN decoder: fp32 (the paper's), bf16 or "
               "fp16 (autocast; the Performer and the encoder stay fp32; causal calls then run the PyTorch "
               "decoder instead of the fp32 decoder kernel). H200, SEA fast (compiled estimator), bf16: "
               "bidirectional 64k 15.7 -> 13.2 ms, causal 64k 5.60 -> 4.99 ms replayed (the compiled bf16 "
               "modules beat the kernel); per-layer fidelity change at most 5.3e-4 (MiniLM) and 1.7e-3 "
               "(SmolLM2) relative (results/nvidia-h200/sea-vs-dense-4/)", choices=("fp32", "bf16", "fp16")),
        Option("performer_dtype", "fp32", "operands of the estimator's Performer products: fp32 (the paper's) or "
               "bf16 (features computed in fp32, then rounded; fp32 accumulation)", choices=("fp32", "bf16")),
        Option("performer_backend", "auto", "estimator's Performer pass: auto (causal: the fused front below for "
               "CUDA calls without a gradient or padding mask when estimator_precision=tf32, else the Triton "
               "prefix-sum kernel on CUDA, torch on CPU; bidirectional: the fused kernel on CUDA when no gradient "
               "is needed and no padding mask is given, torch matmuls otherwise), torch, triton (causal: the "
               "prefix-sum kernel; bidirectional: the fused forward-only kernel, kernels/favor_dense.py), or fused "
               "(causal, forward-only, no padding mask: relu features computed in the kernel, no concatenated "
               "values, and the encoder + scaler head in its epilogue, kernels/sea_favor_encoder.py; the Performer's "
               "output is never written)",
               choices=("auto", "triton", "torch", "fused")),
        Option("encoder_backend", "auto", "estimator's encoder (Linear, LayerNorm, GELU) and scaler head: torch "
               "(the modules), triton (one fused forward-only kernel, kernels/sea_encoder.py) or auto (the kernel on "
               "CUDA when no gradient is needed, the modules otherwise)", choices=("auto", "torch", "triton")),
        Option("decoder_backend", "auto", "estimator's causal CNN decoder: torch (the modules), triton (one fused "
               "forward-only kernel, kernels/sea_decoder.py; causal, estimator_dtype=fp32), split (the same in three "
               "plain forward-only kernels, kernels/sea_decoder_v2.py; on an H200 0.55x the fused kernel's speed: "
               "results/nvidia-h200/sea-decoder-split/) or auto (triton for causal fp32 decoders on "
               "CUDA when no gradient is needed)", choices=("auto", "torch", "triton", "split")),
        Option("estimator_precision", "fp32", "products inside the estimator's fused front, encoder and "
               "bidirectional Performer (kernels/favor_dense.py) Triton kernels: fp32 (three-pass TF32, close to "
               "fp32: the paper's precision) or tf32 (one-pass TF32, ~2^-11 relative per product, and 128-row "
               "chunks in the fused front; with performer_dtype=bf16 the fused front's feature projection also takes "
               "bf16 operands). The decoder kernel keeps three-pass TF32 "
               "(one pass measured slower); the estimator's PyTorch matmuls and cuDNN convolutions (the "
               "bidirectional decoder) may use TF32 for the call (bidirectional 64k 34.7 -> 19.8 ms on an H200, "
               "MiniLM gate passed: results/nvidia-h200/sea-round19/), and with gradients the encoder's, scaler's "
               "and feature projections' backward products too (methods/sea/precision.py; 32k causal fwd+bwd "
               "-0.46 ms of kernels, +9 % memory: results/nvidia-h200/sea-train/). H200, causal, bf16, with the "
               "fused front: 0.548x -> 0.472x cuDNN at 64k, 0.120x -> 0.095x at 256k, fidelity on SmolLM2 q/k/v "
               "unchanged (results/nvidia-h200/sea-precision/); bidirectional 64k 0.935x -> 0.921x, MiniLM gate "
               "passed (results/nvidia-h200/sea-bidir-tf32/)", choices=("fp32", "tf32")),
        Option("encoder_operands", "fp32", "bidirectional estimator: fp32, or bf16: the Performer's output "
               "[B, H, T, 2d] stored in bf16 (rounded once) and the encoder's Linear on bf16 operands with fp32 "
               "sums (in the bidirectional head kernel, kernels/sea_bidir_head.py; the PyTorch encoder computes the "
               "same rounded operands in fp32), half the bytes between the two passes; causal layers refuse it. H200, "
               "8k: head 0.145 -> 0.117 ms, query pass 0.092 -> 0.085; with identity_values=kernel the table's 8k "
               "1.444x -> 1.374x cuDNN (results/nvidia-h200/sea-vs-dense-10/); MiniLM fidelity -0.0006 %; auto: bf16 "
               "bidirectional, fp32 causal", choices=("fp32", "bf16", "auto")),
        Option("performer_dash", "auto", "bidirectional estimator, estimator_precision=tf32: auto (the fused "
               "Performer kernel's dash products: two bf16 products for bf16 keys, TF32 for queries), or fp16: both "
               "passes' projections as one fp16 product of operands rounded to nearest in fp16 (one-pass TF32's "
               "11-bit rounding at half its bytes; values beyond +-65504 clamped; kernels/favor_dense.py; MiniLM "
               "fidelity -0.002 % against exact products, results/cpu/sea-fp16-dash/); elsewhere it does not apply "
               "(impl names it where it ran: performer=.../fp16dash). H200, 8k: no faster (key pass 0.146 -> 0.148 "
               "ms, results/nvidia-h200/sea-bf16-encoder/); refused beside identity_values=kernel (a crash at 64k)",
               choices=("auto", "fp16")),
        Option("identity_values", "concat", "bidirectional estimator without a padding mask: concat (the identity "
               "value columns concatenated in front of v for the Performer) or kernel (made in the fused Performer "
               "kernel's key pass, their products in a narrow accumulator; the same estimate; impl: "
               "performer=.../identity=kernel where it ran; H200, 8k: -0.010 ms of kernels, "
               "results/nvidia-h200/sea-bf16-encoder/); auto: kernel bidirectional, concat causal)",
               choices=("concat", "kernel", "auto")),
        Option("compile", "none", "none, or estimator: the estimator's tensor operations (casts, Performer features, "
               "encoder, decoder, scaler) through torch.compile (inductor, static shapes: each sequence length "
               "compiles once, in the first call); the Triton kernels run between the compiled pieces",
               choices=("none", "estimator")),
        Option("query_chunk", 0, "inference in blocks of this many query rows (0: whole sequence): estimate, "
               "top-k, interpolation, sparse attention and mix one block at a time, so the intermediates take "
               "O(query_chunk) memory instead of O(T). Causal: Performer state, decoder rows and the running mean "
               "carried; with the tensor-op top-k, cells tied exactly at a threshold may be chosen differently than "
               "in the whole call (the CUDA top-k kernel breaks ties alike). Bidirectional (per_batch / per_head "
               "top-k, methods/sea/bidir_blocks.py): the estimator runs 2-3 times over the blocks (an exact threshold "
               "from histograms of the whole estimate, then the selection), ties at the threshold go to the lowest "
               "index; on an H200 1.47x SDPA-flash's memory at 64k but host-bound, 14 s a call "
               "(results/nvidia-h200/sea-bidir-blocks/). With shared_keys only the estimator runs in blocks "
               "(rounded up to a multiple of shared_keys; its block scores are all the shared selection reads), once: "
               "bidirectional on the fused Performer kernel's key summary (Estimator._forward_rows), causal by the "
               "block form above (SEAAttention._causal_block_scores); the selection, sparse attention and mix run "
               "whole. Calls with gradients, padding masks and the tiled kernel "
               "run whole (impl says why)"),
        Option("query_blocks", 0, "like query_chunk, given as a number of blocks: ceil(T / query_blocks) rows each "
               "(0: off), so the intermediates stay a fixed fraction of the sequence at every T"),
        Option("sparse_backward", "auto", "backward of the rows kernel (backend triton_rows, and auto on CUDA, "
               "with gradients; kernels/sea_sparse_rows_bwd.py): row (the row kernel's backward, dk / dv by "
               "atomic adds), keys (dq by the row kernel without atomics, dk / dv over the lists sorted by key: "
               "a 32-bit sort of the entries), keys_rows (keys with dq by the 16-row program), rows "
               "(its own 16-row program with atomic adds; slower, kept for comparison) or auto (the module's "
               "BACKWARD: keys_rows for bf16 / fp16, row for fp32; on an H200 the 32k causal step of SEA fast "
               "14.4 ms with keys, 13.4 with keys_rows, same run, results/nvidia-h200/sea-train/call14/)",
               choices=SPARSE_BACKWARDS),
        Option("sparse_pieces", 3, "16-bit pieces of the probabilities (and of dS in the backward) in the rows "
               "kernels' tensor-core products with 16-bit inputs (backend triton_rows; kernels/sea_sparse_rows.py): "
               "3 = fp32 accuracy, 1 = rounded once to the inputs' dtype as FlashAttention does, 2 in between",
               choices=SPARSE_PIECES),
        Option("cuda_graph", 0, "replay inference calls of at most this many tokens as CUDA graphs (0: off; "
               "methods/sea/graphs.py): per call signature the first call runs eagerly, the second captures the "
               "whole-sequence forward, later ones copy q, k, v into the graph's inputs, replay and copy the output "
               "out. For short sequences, where the eager forward waits on Python's ~100 launches; calls with "
               "gradients, query blocks, CPU tensors or inside another capture run eagerly (impl says why). The "
               "graphs' memory stays reserved (the harness adds it to the peak). H200, bf16, SEA fast, "
               "cuda_graph=32768 against eager, same run: causal 16k 2.40x -> 1.28x cuDNN, 8k 6.7x -> 2.9x, 32k "
               "0.52x -> 0.54x; bidirectional 8k 8.7x -> 3.2x; at 64k the four copies cost more than the launches "
               "saved (results/nvidia-h200/sea-graph-replay/)"),
        Option("mix_backend", "auto", "sparse attention and mix: torch (the sparse kernel writes c, then the mix "
               "in tensor ops), kernel (causal, no padding mask: the cumulative mean of v and the mix in one Triton "
               "kernel after the sparse kernel, kernels/sea_causal_mix.py; on an H200 1.56 -> 0.22 ms at 64k causal, "
               "results/nvidia-h200/sea-rows-mix/; with gradients its backward in two more launches, "
               "kernels/sea_causal_mix_grad.py), triton (forward-only, no padding mask: the "
               "sparse kernel mixes as it attends, c never written: the rows kernel's epilogue, "
               "kernels/sea_sparse_rows.py, or the row kernel's, kernels/sea_sparse_mix.py; bidirectional 64k "
               "15.74 -> 15.25 ms on an H200, results/nvidia-h200/sea-round19/) or auto (on CUDA: kernel for causal "
               "calls, triton for bidirectional calls on the rows kernel; torch otherwise)",
               choices=("auto", "torch", "kernel", "triton")),
        Option("topk_backend", "auto", "grouped top-k: torch (tensor ops), triton (kernels without a padding mask: "
               "per_query and causal_per_batch by kernels/sea_topk.py, per_head and per_batch by a radix select, "
               "kernels/sea_topk_global.py; tensor ops otherwise) or auto (the per-row kernel on CUDA for groups of "
               "<= 1024 candidates, the size measured; the radix select on CUDA where topk.AUTO_GLOBAL_KERNEL; "
               "tensor ops otherwise)",
               choices=("auto", "torch", "triton")),
        Option("interp_backend", "auto", "interpolation of the mask to CSR key lists: torch (tensor ops), triton "
               "(a kernel writes the columns, 16 query rows per program; calls without a padding mask) or auto (the "
               "kernel on CUDA where it serves, tensor ops otherwise)", choices=("auto", "torch", "triton")),
        Option("scaler_input", "shared", "what the s_prob / s_mix head reads: shared (the encoder output, as in the "
               "paper) or detached (the same values, no gradient into the encoder: in distillation the encoder and "
               "decoder then learn from the estimate's own terms only)", choices=("shared", "detached")),
        Option("shared_keys", 0, "query rows per block sharing one key selection (0: each row its own, the paper's; "
               "else a power of two >= 16; causal layers with a per-row top-k mode, bidirectional ones with per_batch "
               "or per_head): each block ranks the cells of A_hat pooled over its rows (causal: at the block end's "
               "geometry), attends the chosen cells' keys outside its own rows (causal: before them; shared_budget "
               "times a row's cell budget) and its own keys (causal: up to each row) (methods/sea/shared.py); on CUDA "
               "without gradients one tensor-core kernel per block expands the cells itself "
               "(kernels/sea_shared_attention.py, no CSR lists), elsewhere the per-row CSR lists of the same "
               "selection. H200, bf16, SEA fast, 64 rows, budget 2, one run each: causal 16k 1.26x -> 0.86x cuDNN "
               "(CUDA-graph replay), 64k 0.216x -> 0.168x (0.87x / 0.165x in a second run); bidirectional 8k 3.19x "
               "-> 2.54x, 16k 1.41x -> 1.13x (replayed), 64k 0.293x -> 0.224x; fidelity better than per-row "
               "selection: mean relative error on SmolLM2-135M's q/k/v (causal, T=2048) 0.886 -> 0.777 (untrained "
               "estimator), 0.258 -> 0.186 (oracle estimate), on all-MiniLM-L6's (bidirectional, T=512) 0.778 -> "
               "0.572 and 0.837 -> 0.485 (results/nvidia-h200/sea-shared-keys/, results/cpu/sea-shared-keys/)"),
        Option("shared_budget", 2.0, "cells a shared-key block attends, as a multiple of one row's top-k budget at "
               "the block's end (shared_keys > 0; 1 measured worse than per-row selection with the oracle estimate, "
               "2 and 4 better)"),
        Option("shared_span", "strided", "the keys a selected cell brings to a shared-key block: strided (the "
               "paper's rule, min(width, k) keys spread over the cell) or blocks (every key of the shared_keys-aligned "
               "key blocks holding the cell's keys: contiguous runs in FlexAttention's block-sparse format, computed "
               "exactly by FlexAttention on CUDA, methods/sea/flex_shared.py; more keys a row). H200, bf16, SEA "
               "fast, 64 rows, budget 2, one run: causal 16k 0.866x -> 0.789x cuDNN (replayed), 64k 0.167x -> "
               "0.159x; bidirectional 64k 0.195x -> 0.239x (slower: keep strided there); closer to exact attention "
               "on SmolLM2 / MiniLM q/k/v (oracle estimate 0.186 -> 0.131, 0.485 -> 0.364; "
               "results/nvidia-h200/sea-flex-blocks/, results/cpu/sea-shared-keys/); auto: blocks causal, strided "
               "bidirectional", choices=("strided", "blocks", "auto")),
        Option("s_prob", -1.0, "force the s_prob scaler to this value (negative: estimated)"),
        Option("s_mix", -1.0, "force the s_mix scaler to this value (negative: estimated)"),
    )

    @classmethod
    def resolve_config(cls, raw=None):
        """The preset's values (PRESETS) under the options given explicitly, then the usual parsing and checks."""
        raw = dict(raw or {})
        preset = cls.option_map()["preset"].parse(raw.get("preset", "none"))
        return super().resolve_config({**preset_values(preset, raw.get("checkpoint")), **raw})

    @classmethod
    def label_base(cls, cfg):
        """A preset's variant is labelled by its name and the options that differ from the preset's values."""
        return {**super().label_base(cfg), **preset_values(cfg.get("preset", "none"), cfg.get("checkpoint"))}

    @classmethod
    def validate_config(cls, cfg):
        if cfg["k"] < 0:
            raise MethodConfigError(f"{cls.name}.k={cfg['k']}: must be >= 1 (or 0 for the default)")
        if cfg["K"] < 0 or cfg["K"] % 4:
            raise MethodConfigError(f"{cls.name}.K={cfg['K']}: must be a positive multiple of 4 (or 0)")
        if cfg["nbf"] < 0:
            raise MethodConfigError(f"{cls.name}.nbf={cfg['nbf']}: must be > 0 (or 0 for the default)")
        if cfg["checkpoint_layer"] < -1:
            raise MethodConfigError(f"{cls.name}.checkpoint_layer={cfg['checkpoint_layer']}: a layer index >= 0, "
                                    "or -1 for the layer being built")
        if cfg["query_chunk"] < 0:
            raise MethodConfigError(f"{cls.name}.query_chunk={cfg['query_chunk']}: rows per query block (>= 1), "
                                    "or 0 for the whole sequence")
        if cfg["query_blocks"] < 0:
            raise MethodConfigError(f"{cls.name}.query_blocks={cfg['query_blocks']}: number of query blocks (>= 1), "
                                    "or 0 for the whole sequence")
        if cfg["query_chunk"] and cfg["query_blocks"]:
            raise MethodConfigError(f"{cls.name}: query_chunk and query_blocks both set; give one of them")
        if cfg["cuda_graph"] < 0:
            raise MethodConfigError(f"{cls.name}.cuda_graph={cfg['cuda_graph']}: longest sequence to replay as a "
                                    "CUDA graph (>= 1), or 0 for off")
        if cfg["max_len"] < 1:
            raise MethodConfigError(f"{cls.name}.max_len={cfg['max_len']}: must be >= 1")
        R = cfg["shared_keys"]
        if R < 0 or (R and (R < 16 or R & (R - 1))):
            raise MethodConfigError(f"{cls.name}.shared_keys={R}: query rows per shared-key block, a power of two "
                                    ">= 16 (or 0 for per-row selection)")
        if not cfg["shared_budget"] > 0:
            raise MethodConfigError(f"{cls.name}.shared_budget={cfg['shared_budget']}: must be > 0")
        if cfg["shared_span"] not in ("strided", "auto") and not R:
            raise MethodConfigError(f"{cls.name}.shared_span={cfg['shared_span']} needs shared_keys > 0")
        if cfg["backend"] == "flex" and cfg["shared_span"] not in ("blocks", "auto"):
            raise MethodConfigError(f"{cls.name}.backend=flex runs shared selections with shared_span=blocks only")
        for key in ("s_prob", "s_mix"):
            if cfg[key] > 1:
                raise MethodConfigError(f"{cls.name}.{key}={cfg[key]}: a forced scaler lies in [0, 1]")

    @classmethod
    def extra_reasons(cls, problem, cfg):
        reasons = []
        r = resolved(cfg, problem.causal)
        if problem.head_dim < 2:
            reasons.append(f"head_dim={problem.head_dim} (needs >= 2 for d ln d random features)")
        if problem.causal and r["mode"] in ("per_head", "per_batch"):
            reasons.append(f"mode={r['mode']} ranks across time (future leaks); causal needs per_query or "
                           "causal_per_batch")
        wants_triton = [f"{key}={cfg[key]}" for key in ("backend", "topk_backend", "interp_backend",
                                                        "performer_backend", "encoder_backend", "decoder_backend",
                                                        "mix_backend")
                        if cfg[key] in ("triton", "fused", "kernel", "triton_tiled", "triton_rows", "split")]
        if wants_triton and problem.device != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            reasons.append(f"{', '.join(wants_triton)} needs a CUDA device (or TRITON_INTERPRET=1 on the CPU); "
                           f"device={problem.device}")
        if r["shared_span"] != "blocks" and cfg["backend"] == "flex":
            reasons.append("backend=flex runs shared selections with shared_span=blocks only; shared_span=auto is "
                           "strided on bidirectional calls")
        if r["encoder_operands"] == "bf16" and problem.causal:
            reasons.append("encoder_operands=bf16 is the bidirectional estimator's (the causal fused front never "
                           "writes the Performer's output); causal calls take encoder_operands=fp32")
        if problem.causal and (cfg["performer_dash"] != "auto" or r["identity_values"] != "concat"):
            reasons.append("performer_dash and identity_values are the bidirectional fused Performer kernel's "
                           "options; causal calls take performer_dash=auto, identity_values=concat")
        if cfg["performer_dash"] == "fp16" and cfg["estimator_precision"] != "tf32":
            reasons.append("performer_dash=fp16 rounds as one-pass TF32 does: it needs estimator_precision=tf32")
        if cfg["performer_dash"] == "fp16" and r["identity_values"] == "kernel":
            from methods.sea import estimator as sea_estimator
            if sea_estimator.REFUSE_FP16_DASH_WITH_IDENTITY:
                reasons.append(sea_estimator.FP16_DASH_WITH_IDENTITY)
        if cfg["performer_backend"] == "fused" and not problem.causal:
            reasons.append("performer_backend=fused is the causal Performer + encoder kernel; bidirectional calls "
                           "take performer_backend=auto or triton (kernels/favor_dense.py)")
        if cfg["performer_backend"] == "fused" and problem.backward:
            reasons.append("performer_backend=fused is a forward-only kernel; forward+backward needs "
                           "performer_backend=auto or torch")
        if cfg["performer_backend"] == "fused" and problem.padding:
            reasons.append("performer_backend=fused has no padding mask; padded calls need performer_backend=auto "
                           "or torch")
        if cfg["performer_backend"] == "triton" and not problem.causal and problem.backward:
            reasons.append("performer_backend=triton is the fused forward-only Performer kernel for bidirectional "
                           "calls; forward+backward needs performer_backend=auto or torch")
        if cfg["encoder_backend"] == "triton" and problem.backward:
            reasons.append("encoder_backend=triton is the fused forward-only encoder kernel; forward+backward needs "
                           "encoder_backend=torch")
        if cfg["mix_backend"] == "kernel" and not problem.causal:
            reasons.append("mix_backend=kernel is the causal mean + mix kernel; bidirectional calls need "
                           "mix_backend=torch")
        if cfg["mix_backend"] == "kernel" and problem.causal and problem.backward and problem.head_dim > 256:
            reasons.append(f"mix_backend=kernel's backward holds whole rows of at most 256 columns "
                           f"(kernels/sea_causal_mix_grad.py); head_dim {problem.head_dim} needs mix_backend=torch")
        if cfg["mix_backend"] == "triton" and problem.backward:
            reasons.append("mix_backend=triton is the fused forward-only sparse attention + mix kernel; "
                           "forward+backward needs mix_backend=torch")
        if cfg["decoder_backend"] in ("triton", "split"):
            name = f"decoder_backend={cfg['decoder_backend']}"
            if problem.backward:
                reasons.append(f"{name} is a forward-only decoder kernel; forward+backward needs "
                               "decoder_backend=torch")
            if not problem.causal:
                reasons.append(f"{name} is the causal decoder's kernel; bidirectional calls need "
                               "decoder_backend=torch")
            if cfg["estimator_dtype"] != "fp32":
                reasons.append(f"{name} runs in fp32; estimator_dtype={cfg['estimator_dtype']}")
        if cfg["shared_keys"]:
            from methods.sea.shared import BIDIRECTIONAL_MODES, SHARED_MODES

            modes = SHARED_MODES if problem.causal else BIDIRECTIONAL_MODES
            if r["mode"] not in modes:
                reasons.append(f"shared_keys on {'causal' if problem.causal else 'bidirectional'} calls needs a "
                               f"top-k mode among {', '.join(modes)}; mode={r['mode']}")
        if problem.causal and problem.seq_len > cfg["max_len"]:
            reasons.append(f"seq_len={problem.seq_len} > max_len={cfg['max_len']} (learned V_I rows)")
        return reasons

    @classmethod
    def build(cls, cfg, problem, *, layer=0, seed=0):
        from methods.sea.layer import SEAAttention

        r = resolved(cfg, problem.causal)
        s_prob, s_mix = cfg["s_prob"], cfg["s_mix"]
        if cls.oracle and not cfg["checkpoint"]:
            # no trained scalers to borrow: the oracle is the pure sparse attention over its selection
            s_prob = 1.0 if s_prob < 0 else s_prob
            s_mix = 1.0 if s_mix < 0 else s_mix
        mod = SEAAttention(heads=problem.heads, head_dim=problem.head_dim, causal=problem.causal, k=r["k"],
                           K=r["K"], mode=r["mode"], nbf=r["nbf"], max_len=cfg["max_len"], oracle=cls.oracle,
                           backend=cfg["backend"], force_s_prob=s_prob, force_s_mix=s_mix,
                           checkpoint=cfg["checkpoint"], seed=seed + 1000 * layer,
                           layer=cfg["checkpoint_layer"] if cfg["checkpoint_layer"] >= 0 else layer,
                           estimator_dtype=cfg["estimator_dtype"], performer_dtype=cfg["performer_dtype"],
                           interp_backend=cfg["interp_backend"], topk_backend=cfg["topk_backend"],
                           scaler_input=cfg["scaler_input"], performer_backend=cfg["performer_backend"],
                           encoder_backend=cfg["encoder_backend"], compile=cfg["compile"],
                           query_chunk=cfg["query_chunk"], decoder_backend=cfg["decoder_backend"],
                           query_blocks=cfg["query_blocks"], mix_backend=cfg["mix_backend"],
                           estimator_precision=cfg["estimator_precision"],
                           sparse_backward=cfg["sparse_backward"], sparse_pieces=cfg["sparse_pieces"],
                           cuda_graph=cfg["cuda_graph"], shared_keys=cfg["shared_keys"],
                           shared_budget=cfg["shared_budget"], shared_span=r["shared_span"],
                           encoder_operands=r["encoder_operands"], performer_dash=cfg["performer_dash"],
                           identity_values=r["identity_values"])
        return mod.to(problem.device)


@register
class SEA(_SEABase):
    name = "sea"
    summary = "SEA: Performer+CNN estimate of a compressed attention map, grouped top-k, sparse attention"


@register
class SEAOracle(_SEABase):
    name = "sea-oracle"
    summary = ("SEA with A_hat = exact attention pooled to K columns (O(T^2) upper bound of the estimator); "
               "scalers default to s_prob = s_mix = 1 unless a checkpoint provides them")
    oracle = True
    complexity = "O(T^2 D) (exact probabilities for A_hat) + sparse"

    @classmethod
    def extra_reasons(cls, problem, cfg):
        reasons = super().extra_reasons(problem, cfg)
        if problem.seq_len > 16384:
            reasons.append(f"seq_len={problem.seq_len} (the oracle materialises T x T probabilities; at most 16384)")
        return reasons
