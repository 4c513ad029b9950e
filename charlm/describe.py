"""What a checkpoint holds, as a plain dict (`charlm info` renders it, or prints it as JSON)."""

from __future__ import annotations

from charlm.checkpoint import VERSION, Checkpoint
from charlm.model import num_params


def describe(ck: Checkpoint, path: str) -> dict:
    cfg = ck.config
    per_layer = {}
    for name, p in ck.params.items():
        group = name.rsplit(".", 1)[0]
        per_layer[group] = per_layer.get(group, 0) + int(p.size)
    m = ck.meta
    return {
        "path": path,
        "format_version": VERSION,
        "cell": cfg.cell,
        "num_layers": cfg.num_layers,
        "hidden_size": cfg.hidden_size,
        "activation": cfg.activation,
        "dtype": cfg.dtype,
        "parameters": {"total": num_params(ck.params), **per_layer},
        "vocab_size": len(ck.vocab),
        "vocab_specials": {"<EOS>": 0, "<UNK>": 1},
        "vocab_preview": "".join(ck.vocab.tokens[2:])[:80],
        "steps": m.get("steps"),
        "train_seconds": m.get("train_seconds"),
        "chars_seen": m.get("chars_seen"),
        "workers": m.get("workers"),     # processes that shared each step (None: written before charlm had workers)
        "best_val_bpc": m.get("best_val_bpc"),
        "best_step": m.get("best_step"),
        "last_val_bpc": m.get("last_val_bpc"),
        "corpus": m.get("corpus"),
        "init_from": m.get("init_from"),  # the base model a fine-tuned run started from (None: a fresh start)
        "resumable": ck.resumable,
        "has_best_weights": ck.best_params is not None,
        "ngram": None if ck.ngram is None else {
            "order": ck.ngram.order,
            "grams": int(sum(len(k) for k in ck.ngram.keys)),
            "network_share": dict(ck.mix_weights),
            # bidirectional: the weights of the network and the n-gram experts (charlm.combine.EXPERTS)
            "combination": {which: [float(x) for x in w] for which, w in ck.combine_weights.items()},
        },
        "options": cfg.to_dict(),
    }
