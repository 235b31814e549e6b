"""Triton math helpers the kernels share (imported only where triton is)."""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def ex2_ftz(x, EMU: tl.constexpr):
    """2^x by PTX's ex2.approx.ftz.f32: one MUFU.EX2, results below 2^-126 flushed to 0 (tl.exp lowers to a multiply
    and ex2.approx.f32 without .ftz, which ptxas wraps in a compare and two multiplies for subnormal results). Under
    the interpreter (EMU), tl.exp2."""
    if EMU:
        return tl.exp2(x)
    else:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)


@triton.jit
def round_bf16_bits(x):
    """fp32 -> nearest bf16 (ties to even), returned as fp32, by integer arithmetic on the bit pattern: the Triton
    interpreter (whose float downcast truncates) rounds exactly like the GPU and torch. Compiled, ~5 integer
    instructions a value."""
    bits = x.to(tl.int32, bitcast=True)
    bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & -65536
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def round_bf16(x, EMU: tl.constexpr):
    """round_bf16_bits under the interpreter (EMU); on the GPU Triton's fp32 -> bf16 cast (round to nearest even,
    one conversion instruction for two values), back to fp32."""
    if EMU:
        return round_bf16_bits(x)
    else:
        return x.to(tl.bfloat16).to(tl.float32)
