"""Before a training run starts: what the user should hear about the corpus.

(The run's configuration is `config.build_config`: the defaults, or a
resumed run's saved configuration, < the YAML file < the flags;
`charlm.run.check_resume` then says what changed.)  The warnings are
returned as text; the caller prints them.
"""

from __future__ import annotations

import numpy as np

from charlm.config import Config
from charlm.ngram import max_order
from charlm.dataset import Corpus
from charlm.vocab import UNK_ID

MAX_UNK_SHARE = 0.1   # a vocabulary file that leaves more of the corpus to <UNK> is worth a warning


def corpus_warnings(cfg: Config, data: Corpus, vocab_file: str | None, named: set[str],
                    base_path: str | None = None) -> list[str]:
    """What is worth a warning about this corpus with these options (`named`: the options the user gave;
    `base_path`: the model a fine-tuned run starts from, whose vocabulary it reads the corpus with)."""
    notes = []
    # counted only where a vocabulary not built from this corpus may leave some of it to <UNK>
    unknown = (sum(int(np.count_nonzero(ids == UNK_ID)) for ids in (data.train_ids, data.val_ids))
               if base_path is not None or vocab_file else 0)
    if base_path is not None and unknown:
        notes.append(f"{unknown:,} characters of the corpus are outside the vocabulary of {base_path} and are "
                     "read as <UNK> (--extend-vocab adds them)")
    if vocab_file and {"min_count", "max_size"} & named:
        notes.append("--min-count and --max-size shape a vocabulary built from the corpus; with --vocab they "
                     "are ignored")
    if len(data.vocab) == 2:
        notes.append("the vocabulary is only <EOS> and <UNK>" + ("" if vocab_file else f" (no character is seen "
                     f"--min-count {cfg.min_count:,} times)") + ": the model reads every character as <UNK>")
    elif vocab_file:   # a vocabulary file: how much of this corpus it leaves to <UNK>
        total = len(data.train_ids) + len(data.val_ids)
        if total and unknown > total * MAX_UNK_SHARE:
            notes.append(f"{vocab_file} leaves {unknown / total:.1%} of this corpus's tokens to <UNK>")
    k = max_order(len(data.vocab))
    if cfg.ngram and cfg.ngram > k:
        notes.append(f"over {len(data.vocab):,} tokens an n-gram can be at most a {k}-gram here (its keys are "
                     f"64-bit integers): counting {k}-grams, not {cfg.ngram}-grams")
    if cfg.ngram and len(data.val_ids) == 0:
        why = ("--val-fraction 0" if cfg.val_fraction == 0 else
               f"the corpus, {len(data.train_ids):,} tokens, is too small to hold out any")
        notes.append(f"no validation text ({why}): the n-gram's share cannot be fitted, so the model is the "
                     "network alone")
    return notes
