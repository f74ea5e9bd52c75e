"""The real CLIP BPE vocabulary, turned into a Hugging Face `CLIPTokenizer` without a model hub.

Stable Diffusion's tokenizer is OpenAI CLIP's byte-level BPE. The same vocabulary ships inside the
`open_clip_torch` wheel (`bpe_simple_vocab_16e6.txt.gz`). Building the tokenizer from it gives the
same token ids as SD's, so tiny test backbones tokenize prompts exactly as real ones do.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

from rrnet.errors import RRNetError

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2


def cache_dir() -> Path:
    """Where rrnet keeps downloaded or derived files (`RRNET_CACHE`, else `~/.cache/rrnet`)."""
    root = os.environ.get("RRNET_CACHE") or Path.home() / ".cache" / "rrnet"
    return Path(root)


def checkout_cache_dir() -> Path | None:
    """`.cache/rrnet` beside a source checkout (where `make` puts the vocabulary), if rrnet runs from one."""
    root = Path(__file__).resolve().parents[3]
    return root / ".cache" / "rrnet" if (root / "pyproject.toml").is_file() else None


def find_bpe_file() -> Path:
    """Locate the CLIP BPE file: `RRNET_CLIP_BPE`, the rrnet cache, the checkout's `.cache/rrnet`
    (so benchmarks, tests and the CLI find it however they are started), or an installed open_clip."""
    candidates = []
    if os.environ.get("RRNET_CLIP_BPE"):
        candidates.append(Path(os.environ["RRNET_CLIP_BPE"]))
    candidates.append(cache_dir() / "clip" / BPE_NAME)
    checkout = checkout_cache_dir()
    if checkout is not None:
        candidates.append(checkout / "clip" / BPE_NAME)
    try:  # open_clip is optional: installing it pulls torchvision, so we never require it
        import importlib.util

        spec = importlib.util.find_spec("open_clip")
        if spec is not None and spec.origin:
            candidates.append(Path(spec.origin).parent / BPE_NAME)
    except (ImportError, ValueError):
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise RRNetError(
        f"CLIP BPE vocabulary not found (looked in: {', '.join(str(c) for c in candidates)}); "
        "run `make vocab` or `python -m rrnet.backbones.clip_vocab WHEEL` on an open_clip_torch wheel"
    )


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode map, which defines the base vocabulary."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def vocab_and_merges(bpe_path: Path) -> tuple[dict[str, int], list[str]]:
    """Rebuild CLIP's vocabulary (49,408 tokens) and merge list from the BPE file, in CLIP's order."""
    lines = gzip.open(bpe_path, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1 : NUM_MERGES + 1]
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


@lru_cache(maxsize=4)
def _clip_vocab(bpe_path: Path) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    vocab, merges = vocab_and_merges(bpe_path)
    return tuple(vocab.items()), tuple(merges)


def tokenizer_from_vocab(vocab: dict[str, int], merges: list[str], pad_token: str = "!", model_max_length: int = 77):
    """A `CLIPTokenizer` from an in-memory vocabulary and merge list (written to a temp folder)."""
    from transformers import CLIPTokenizer

    folder = Path(tempfile.mkdtemp(prefix="rrnet-clip-"))
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    # transformers 5 ignores the vocab_file=/merges_file= keywords: pass the paths positionally
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad_token, model_max_length=model_max_length)


def clip_tokenizer(pad_token: str = "!", model_max_length: int = 77):
    """A `CLIPTokenizer` with SD's ids. `pad_token="!"` is SD 2.x; SD 1.x pads with `<|endoftext|>`."""
    vocab, merges = _clip_vocab(find_bpe_file())
    return tokenizer_from_vocab(dict(vocab), list(merges), pad_token, model_max_length)


def extract_from_wheel(wheel: Path, dest: Path | None = None) -> Path:
    """Copy the BPE file out of an open_clip_torch wheel into the rrnet cache (atomically)."""
    dest = dest or cache_dir() / "clip" / BPE_NAME
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        name = next((n for n in zf.namelist() if n.endswith(BPE_NAME)), None)
        if name is None:
            raise RRNetError(f"{wheel}: no {BPE_NAME} inside this wheel")
        tmp = dest.with_suffix(".tmp")
        tmp.write_bytes(zf.read(name))
        os.replace(tmp, dest)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m rrnet.backbones.clip_vocab OPEN_CLIP_WHEEL")
    print(extract_from_wheel(Path(sys.argv[1])))
