"""Does fine-tuning pay?  Pre-train on one text, fine-tune on another, compare with training from scratch.

    python -m charlm.bench.finetune BASE.txt [--pretrain 180] [--seconds 60] [--target TEXT] [--out DIR]

1. trains the default model on BASE.txt for --pretrain seconds (or takes
   --base-checkpoint);
2. fine-tunes it on the target text for --seconds (`--init-from`, with
   `--extend-vocab`, so that both runs read every character of the target);
3. trains the same model from scratch on the target for the same --seconds;

and prints one JSON object: the validation bits/char of both runs on the
same held-out stretches of the target (with the n-gram, as `score` uses the
model, and the network alone).  The target defaults to prose that ships with
Python itself: the docstrings of the standard library's modules, classes and
functions (`stdlib_prose`), under the Python Software Foundation licence.
This is a measurement, not a test: its figures depend on the machine.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
import sysconfig

from charlm import checkpoint as ckpt_io
from charlm import finetune
from charlm.config import Config
from charlm.dataset import load_corpus
from charlm.train import train

STDLIB_MODULES = ("argparse", "calendar", "collections/__init__", "csv", "datetime", "difflib", "fractions",
                  "functools", "heapq", "logging/__init__", "pathlib", "random", "shutil", "statistics",
                  "string", "tempfile", "textwrap", "threading", "unittest/case", "zipfile")


def stdlib_prose(max_chars: int = 300_000) -> str:
    """Docstrings of a fixed list of standard-library modules (their source, read with `ast`), one blank line
    between docstrings, at most `max_chars` characters (whole docstrings)."""
    root = sysconfig.get_paths()["stdlib"]
    parts, size = [], 0
    for name in STDLIB_MODULES:
        path = os.path.join(root, name + ".py")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef))]:
            doc = ast.get_docstring(node)
            if doc and len(doc) > 80:
                if size + len(doc) > max_chars:
                    return "\n\n".join(parts) + "\n"
                parts.append(doc.strip())
                size += len(doc) + 2
    return "\n\n".join(parts) + "\n"


def _best_bpc(ck) -> dict:
    hist = ck.train_state["history"]
    best = min(hist, key=lambda h: h["val_bpc"])
    return {"val_bpc": best["val_bpc"], "net_val_bpc": min(h["net_val_bpc"] for h in hist),
            "steps": ck.meta["steps"], "train_seconds": ck.meta["train_seconds"]}


def run(base_text: str, target: str, pretrain: float, seconds: float, out: str,
        base_checkpoint: str | None = None, log=lambda msg: print(msg, file=sys.stderr)) -> dict:
    """The three runs; their figures as a dict."""
    os.makedirs(out, exist_ok=True)
    base_path = base_checkpoint or os.path.join(out, "base.npz")
    if base_checkpoint is None:
        log(f"pre-training on {base_text} for {pretrain:g} s")
        cfg = Config(max_time=pretrain).validate()
        ck, _ = train(cfg, load_corpus(base_text, cfg), save=lambda c: ckpt_io.save(c, base_path))
    base = ckpt_io.load(base_path)

    log(f"fine-tuning on {target} for {seconds:g} s")
    cfg = Config(max_time=seconds).validate()
    finetune.adopt_arch(cfg, base, set(), base_path)
    data = load_corpus(target, cfg, lambda counts: finetune.extended_vocab(base.vocab, counts, cfg.min_count))
    tuned, _ = train(cfg, data, init=finetune.start(base, base_path, data.vocab),
                     save=lambda c: ckpt_io.save(c, os.path.join(out, "finetuned.npz")))

    log(f"training from scratch on {target} for {seconds:g} s")
    cfg = Config(max_time=seconds).validate()
    finetune.adopt_arch(cfg, base, set(), base_path)     # the same architecture
    scratch, _ = train(cfg, load_corpus(target, cfg), save=lambda c: ckpt_io.save(c, os.path.join(out, "scratch.npz")))
    val_tokens = len(data.val_ids)
    return {"base": {"corpus": base.meta["corpus"]["name"], "steps": base.meta["steps"],
                     "train_seconds": base.meta["train_seconds"], "best_val_bpc": base.meta["best_val_bpc"]},
            "target": {"name": target, "chars": data.info["num_chars"], "val_tokens": val_tokens},
            "model": f"{cfg.cell} {cfg.num_layers}x{cfg.hidden_size}",
            "finetuned": _best_bpc(tuned), "scratch": _best_bpc(scratch), "cpu_count": os.cpu_count()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m charlm.bench.finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("base_text", help="text to pre-train on (e.g. tiny-shakespeare)")
    p.add_argument("--target", help="text to fine-tune on (default: the standard library's docstrings, "
                                    "written to OUT/stdlib_docstrings.txt)")
    p.add_argument("--pretrain", type=float, default=180.0, help="seconds of pre-training")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of fine-tuning and of training from scratch")
    p.add_argument("--base-checkpoint", help="skip pre-training: fine-tune this checkpoint")
    p.add_argument("--out", default="finetune-bench", help="folder for the checkpoints and the target text")
    a = p.parse_args(argv)
    if not (a.pretrain > 0 and a.seconds > 0 and math.isfinite(a.pretrain + a.seconds)):
        p.error("--pretrain and --seconds must be positive")
    target = a.target
    if target is None:
        os.makedirs(a.out, exist_ok=True)
        target = os.path.join(a.out, "stdlib_docstrings.txt")
        with open(target, "w", encoding="utf-8") as f:
            f.write(stdlib_prose())
    print(json.dumps(run(a.base_text, target, a.pretrain, a.seconds, a.out, a.base_checkpoint), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
