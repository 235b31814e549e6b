"""Text corpora for model-level tasks, named the way a user would.

    load_text("wikitext-2-test")      # shared/data/wikitext-2-raw/wiki.test.raw, read as-is
    load_text("wikitext-2-valid")     # shared/data/wikitext-2-raw/wiki.valid.raw
    load_text("austen")               # the six Austen novels, concatenated in publication order
    load_text("austen-emma")          # one novel (also -sensesensibility, -prideprejudice, ...)
    load_text("/path/to/file.txt")    # any local UTF-8 text file
    load_text("wikitext-2-raw-v1")    # the hub dataset (needs `datasets` and network), test split;
                                      # "wikitext-2-raw-v1:validation" for another split

The shared folder is $HARNESS_SHARED, else ../shared beside the repository root.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

AUSTEN = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
SHARED_FILES = {
    "wikitext-2-test": "data/wikitext-2-raw/wiki.test.raw",
    "wikitext-2-valid": "data/wikitext-2-raw/wiki.valid.raw",
    **{f"austen-{n}": f"data/austen/{n}.txt" for n in AUSTEN},
}
HUB_DATASETS = {"wikitext-2-raw-v1": ("wikitext", "wikitext-2-raw-v1")}


class CorpusError(RuntimeError):
    """The corpus cannot be found or loaded; the message says what to pass instead."""


@dataclass(frozen=True)
class Corpus:
    name: str       # what the user passed
    source: str     # where it came from (a path or hub dataset/split)
    text: str


def shared_root() -> Path:
    env = os.environ.get("HARNESS_SHARED")
    return Path(env) if env else (ROOT.parent / "shared")


def corpus_names() -> list[str]:
    return sorted([*SHARED_FILES, "austen", *HUB_DATASETS])


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def load_text(spec: str) -> Corpus:
    """A corpus by name or path (see the module docstring)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return Corpus(spec, str(path.resolve()), _read(path))
    name, _, split = spec.partition(":")
    if name in SHARED_FILES or name == "austen":
        root = shared_root()
        rels = [SHARED_FILES[f"austen-{n}"] for n in AUSTEN] if name == "austen" else [SHARED_FILES[name]]
        files = [root / r for r in rels]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise CorpusError(f"corpus {name!r}: {', '.join(missing)} not found (set HARNESS_SHARED to the shared "
                              f"folder, or pass a local file path)")
        return Corpus(spec, ", ".join(str(f) for f in files), "".join(_read(f) for f in files))
    if name in HUB_DATASETS:
        return _load_hub(spec, *HUB_DATASETS[name], split or "test")
    if os.sep in spec or spec.startswith("."):
        raise CorpusError(f"{spec}: no such file")
    raise CorpusError(f"unknown corpus {spec!r}; pass a local text file or one of: {', '.join(corpus_names())}")


def _load_hub(spec: str, dataset: str, config: str, split: str) -> Corpus:
    local = {"test": "wikitext-2-test", "validation": "wikitext-2-valid"}.get(split)
    hint = f"pass --text {local} (the shared copy) or a local file path" if local else "pass a local file path"
    try:
        import datasets
    except ImportError:
        raise CorpusError(f"{spec}: the 'datasets' package is not installed; {hint}") from None
    try:
        ds = datasets.load_dataset(dataset, config, split=split)
    except Exception as exc:  # noqa: BLE001 - offline, unknown split, hub errors: one message
        raise CorpusError(f"{spec}: could not load {dataset}/{config} split {split} "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); {hint}") from None
    # The usual recipe: rows joined by blank lines (not byte-identical to the raw file; see the shared README).
    return Corpus(spec, f"hub:{dataset}/{config}:{split}", "\n\n".join(ds["text"]))
