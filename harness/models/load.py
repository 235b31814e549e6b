"""Load a model and its tokenizer the way users name them: a hub name, a local folder, a GGUF file, or a
folder of GGUF parts (reassembled once into a writable cache folder, sha256-checked).

    load_model("HuggingFaceTB/SmolLM2-135M")                      # hub (or the local hub cache when offline)
    load_model("/work/shared/models/minilm-l6", task="encoder")   # folder with config.json
    load_model("/models/x/model.Q4_1.gguf")                       # GGUF file (dequantised by transformers)
    load_model("/work/shared/models/smollm2-135m")                # folder of *.gguf.part-NN files
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from methods.base import DTYPES

TASKS = ("causal-lm", "encoder", "classification")
_PART = re.compile(r"^(?P<target>.+\.gguf)\.part-(?P<n>\d+)$")
_SHA = re.compile(r"\b[0-9a-f]{64}\b")


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; the message says why and what to do."""


def cache_dir() -> Path:
    """Writable folder for reassembled files: $HARNESS_CACHE, else $XDG_CACHE_HOME/attention-harness,
    else ~/.cache/attention-harness."""
    if os.environ.get("HARNESS_CACHE"):
        return Path(os.environ["HARNESS_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "attention-harness"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _listed_hashes(folder: Path) -> dict[str, str]:
    """file name -> sha256 from SHA256SUMS ('<hash>  <name>') and README.md lines naming a file and a hash
    (the first hash on a line that names the whole file and no part)."""
    found: dict[str, str] = {}
    sums = folder / "SHA256SUMS"
    if sums.exists():
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and _SHA.fullmatch(parts[0]):
                found[Path(parts[-1].lstrip("*")).name] = parts[0]
    readme = folder / "README.md"
    if readme.exists():
        names = {m.group("target") for p in folder.iterdir() if (m := _PART.match(p.name))}
        for line in readme.read_text(errors="replace").splitlines():
            hashes = _SHA.findall(line)
            if not hashes or ".part-" in line:
                continue
            for name in names:
                if name in line and name not in found:
                    found[name] = hashes[0]
    return found


def find_parts(folder: Path) -> dict[str, list[Path]]:
    """{target file name: its parts in order} for the '*.gguf.part-NN' files in `folder`."""
    groups: dict[str, list[tuple[int, Path]]] = {}
    for p in Path(folder).iterdir():
        m = _PART.match(p.name)
        if m:
            groups.setdefault(m.group("target"), []).append((int(m.group("n")), p))
    out = {}
    for target, items in groups.items():
        items.sort()
        numbers = [n for n, _ in items]
        if numbers != list(range(len(numbers))):
            raise ModelLoadError(f"{folder}: parts of {target} are numbered {numbers}; expected 0..{len(numbers) - 1}")
        out[target] = [p for _, p in items]
    return out


def assemble_parts(folder: str | Path, *, target: str | None = None, dest: str | Path | None = None,
                   verify: bool = True) -> Path:
    """Concatenate '<name>.gguf.part-NN' files of `folder` into `dest` (default: the cache folder, in a
    sub-folder named after `folder`) and return the whole file's path. Part hashes from SHA256SUMS and the whole
    file's hash from SHA256SUMS/README.md are checked when listed (a mismatch raises and leaves no file).
    An existing assembled file whose hash (or, with nothing listed, size) matches is reused."""
    folder = Path(folder)
    groups = find_parts(folder)
    if not groups:
        raise ModelLoadError(f"{folder} holds no '*.gguf.part-NN' files")
    if target is None:
        if len(groups) > 1:
            raise ModelLoadError(f"{folder} holds parts of several files ({', '.join(sorted(groups))}); pass target=")
        target = next(iter(groups))
    if target not in groups:
        raise ModelLoadError(f"{folder} holds no parts of {target}")
    parts = groups[target]
    hashes = _listed_hashes(folder) if verify else {}
    dest = Path(dest) if dest is not None else cache_dir() / "models" / folder.name
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / target
    size = sum(p.stat().st_size for p in parts)
    want = hashes.get(target)
    if out.exists() and out.stat().st_size == size and (want is None or sha256_file(out) == want):
        return out
    for p in parts:
        if p.name in hashes and sha256_file(p) != hashes[p.name]:
            raise ModelLoadError(f"{p}: sha256 does not match SHA256SUMS (corrupt part)")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as w:
            for p in parts:
                with open(p, "rb") as r:
                    while True:
                        block = r.read(1 << 22)
                        if not block:
                            break
                        h.update(block)
                        w.write(block)
        if want is not None and h.hexdigest() != want:
            raise ModelLoadError(f"reassembled {target}: sha256 {h.hexdigest()} != listed {want}")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _auto_class(task: str):
    import transformers

    if task not in TASKS:
        raise ModelLoadError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    return {"causal-lm": transformers.AutoModelForCausalLM, "encoder": transformers.AutoModel,
            "classification": transformers.AutoModelForSequenceClassification}[task]


def resolve_source(name_or_path: str | Path, gguf_file: str | None = None) -> tuple[str, str | None, str]:
    """(folder or hub name, gguf file name or None, kind) with kind 'gguf', 'folder' or 'hub'."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if gguf_file is not None:
        return str(path), gguf_file, "gguf"
    if text.endswith(".gguf"):
        if path.exists():
            return str(path.parent), path.name, "gguf"
        if path.parent.is_dir() and find_parts(path.parent).get(path.name):
            whole = assemble_parts(path.parent, target=path.name)
            return str(whole.parent), whole.name, "gguf"
        raise ModelLoadError(f"{path}: no such GGUF file (nor parts {path.name}.part-NN beside it)")
    if path.is_dir():
        if (path / "config.json").exists():
            return str(path), None, "folder"
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(path), ggufs[0], "gguf"
        if find_parts(path):
            whole = assemble_parts(path)
            return str(whole.parent), whole.name, "gguf"
        raise ModelLoadError(f"{path} is a folder without config.json, a single .gguf file or .gguf parts")
    if path.exists():
        raise ModelLoadError(f"{path} is a file but not a .gguf file; pass the model folder")
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ModelLoadError(f"{text}: no such file or folder")
    return text, None, "hub"


def load_model(name_or_path: str | Path, *, task: str = "causal-lm", dtype: str | torch.dtype = "fp32",
               device: str = "cpu", gguf_file: str | None = None, attn_implementation: str = "eager"):
    """(model in eval mode, tokenizer). dtype: fp32/fp16/bf16/fp64 or a torch dtype. GGUF weights are
    dequantised by transformers (needs the `gguf` package). A hub name that is neither cached nor reachable
    (offline) raises ModelLoadError saying so."""
    import transformers

    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    if isinstance(dtype, str) and dtype not in DTYPES:
        raise ModelLoadError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    auto = _auto_class(task)
    source, gguf, kind = resolve_source(name_or_path, gguf_file)
    kwargs = {"gguf_file": gguf} if gguf else {}
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no", "off")
    if kind == "hub" and offline:
        kwargs["local_files_only"] = True
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
        model = auto.from_pretrained(source, dtype=torch_dtype, attn_implementation=attn_implementation, **kwargs)
    except (OSError, ValueError) as exc:
        if kind == "hub":
            why = "HF_HUB_OFFLINE is set" if offline else "the hub may be unreachable (offline?)"
            raise ModelLoadError(f"cannot load {source!r} from the Hugging Face hub and it is not in the local cache "
                                 f"({why}): {str(exc).splitlines()[0][:300]}. Pass a local folder or .gguf file "
                                 f"instead.") from None
        if gguf and "install" in str(exc).lower():
            # e.g. transformers 5.2x needs `accelerate` as well as `gguf` to read GGUF files
            raise ModelLoadError(f"loading {gguf}: {str(exc).splitlines()[0][:300]}") from None
        raise ModelLoadError(f"cannot load {name_or_path}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") \
            from None
    _fix_special_tokens(model, tokenizer)
    model.to(device)
    model.eval()
    return model, tokenizer


def _fix_special_tokens(model, tokenizer) -> None:
    """GGUF-converted tokenizers can report a wrong EOS (the model's generation_config knows the right one)
    and often no pad token; set EOS from the generation config where they disagree and pad = EOS if unset."""
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    if isinstance(eos, int) and tokenizer.eos_token_id != eos:
        token = tokenizer.convert_ids_to_tokens(eos)
        if isinstance(token, str):
            tokenizer.eos_token = token
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token


def model_problem_dims(model) -> dict:
    """heads, kv_heads, head_dim and layers of a transformers model's config (for rows)."""
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None) or 0
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None) or 0
    head_dim = getattr(cfg, "head_dim", None) or (hidden // heads if heads else 0)
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None) or 0
    return {"heads": int(heads), "kv_heads": int(kv), "head_dim": int(head_dim), "layers": int(layers)}
