import json, sys, torch
from safetensors import safe_open
sys.path.insert(0, "/work/main")
import methods
from harness.runner import resolve_methods
from methods.base import Problem, repeat_kv
from methods.sea.topk import select_topk

f = safe_open(sys.argv[1], "pt"); info = json.loads(f.metadata()["layers"]); li = int(sys.argv[2])
q, k, v = (f.get_tensor(f"layer{li}.{n}").float() for n in "qkv"); B, H, T, D = q.shape
(name, cfg), = resolve_methods(["sea:backend=torch"], {})
mod = methods.get(name).build(cfg, Problem(batch=B, heads=H, kv_heads=k.shape[1], seq_len=T, head_dim=D, dtype="fp32", causal=True, device="cpu"), layer=info[li]["index"], seed=0).eval()
kr, vr = repeat_kv(k, H), repeat_kv(v, H)
rel = lambda a, b: float((a.double() - b.double()).norm() / b.double().norm())
with torch.no_grad():
    lw, spw, smw = mod.estimator(q, kr, vr, valid=None)
    aw = torch.softmax(lw, -1); mw = select_topk(aw, mode=mod.mode, k=mod.k, causal=True, backend="torch")
    carry = None; R = 64
    for s in range(0, T, R):
        e = min(T, s + R)
        lb, spb, smb, carry = mod.estimator.forward_block(q[:, :, s:e], kr[:, :, s:e], vr[:, :, s:e], row0=s, carry=carry)
        ab = torch.softmax(lb, -1)
        mb = select_topk(ab, mode=mod.mode, k=mod.k, causal=True, backend="torch", row0=s)
        mbw = select_topk(aw, mode=mod.mode, k=mod.k, causal=True, backend="torch")[:, :, s:e]
        print(f"rows {s}:{e} logits rel {rel(lb, lw[:, :, s:e]):.3g} s_prob {rel(spb, spw[:, :, s:e]):.3g} s_mix {rel(smb, smw[:, :, s:e]):.3g} "
              f"mask mismatches {(mb != mw[:, :, s:e]).sum().item()} of {mb.numel()} (selected whole {mw[:, :, s:e].sum().item()}, block {mb.sum().item()}); "
              f"mask(whole a_hat, row0=s) vs whole: {(select_topk(aw[:, :, s:e], mode=mod.mode, k=mod.k, causal=True, backend='torch', row0=s) != mw[:, :, s:e]).sum().item()}")
    # tie check: per mismatching (b, t) row, the multiset of selected scores whole vs block (row0 on the whole a_hat)
    flat = aw.permute(0, 2, 1, 3).reshape(B, T, H * mod.K)
    ties = notie = 0
    for s in range(64, T, R):
        e = min(T, s + R)
        mb = select_topk(aw[:, :, s:e], mode=mod.mode, k=mod.k, causal=True, backend="torch", row0=s).permute(0, 2, 1, 3).reshape(B, e - s, H * mod.K)
        mwf = mw[:, :, s:e].permute(0, 2, 1, 3).reshape(B, e - s, H * mod.K)
        for b in range(B):
            for t in range(e - s):
                if not torch.equal(mb[b, t], mwf[b, t]):
                    x = flat[b, s + t]
                    a, c = x[mb[b, t]].sort().values, x[mwf[b, t]].sort().values
                    thr = c.min()
                    differ = x[mb[b, t] ^ mwf[b, t]]
                    if torch.equal(a, c) and bool((differ == thr).all()):
                        ties += 1
                    else:
                        notie += 1
                        print("row", s + t, "not a tie", (a - c).abs().max().item())
    print("mismatching rows: all differing cells tied at the threshold:", ties, "other:", notie)
    # how many distinct values per row among H*K candidates (the decoder's repeated columns)
    print("distinct values in a row of 576 candidates (row 200):", flat[0, 200].unique().numel())
