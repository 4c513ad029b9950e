"""`charlm score`: the log-likelihood of sentences, of each line of a file, or of a whole document."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from charlm import checkpoint as ckpt_io
from charlm import sources
from charlm.bidirectional import refuse
from charlm.cli.app import app, handle_errors
from charlm.cli.console import err, fail, json_line, out, warn
from charlm.cli.options import (CheckpointOpt, DeviceOpt, EncodingOpt, EngineOpt, ErrorsOpt, NetworkOnlyOpt, WeightsOpt,
                                checkpoint_path, one_stdin)
from charlm.score import BATCH_SIZE


@app.command(epilog="""**Examples**

```
charlm score "Anna" "Zxqv"                    # a table of log-likelihoods
charlm score --file sentences.txt --json | jq .bits_per_char
charlm score --document --file val.txt    # the file as one sequence
charlm score --document --file poems/     # a folder as one corpus
echo "hello world" | charlm score -
charlm score --file big.txt --json --engine torch --device cuda
```
""")
@handle_errors
def score(
    sentences: Annotated[Optional[list[str]], typer.Argument(help="Sentences to score; - reads one per line from stdin.", show_default=False)] = None,
    checkpoint: CheckpointOpt = None,
    file: Annotated[Optional[list[str]], typer.Option("-f", "--file", help="Score each line of this file (- for stdin); with --document, repeat it or name a folder to read many files as one corpus.", show_default=False)] = None,
    document: Annotated[bool, typer.Option("--document", help="Score the whole --file as one sequence (state carried over lines) and report totals.")] = False,
    exact: Annotated[bool, typer.Option("--exact", help="With --document: read the file strictly in order, one character at a time (slower; the default reads it in checked pieces and gives the same number).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line, per sentence.")] = False,
    show: Annotated[bool, typer.Option("--show", help="Show each sentence coloured by surprisal, with the least expected characters and the model's alternatives.")] = False,
    weights: WeightsOpt = "best",
    batch_size: Annotated[int, typer.Option(help="Sentences scored together.")] = BATCH_SIZE,
    network_only: NetworkOnlyOpt = False,
    workers: Annotated[Optional[int], typer.Option(help="Processes that read the batches of sentences, one batch each at a time (1: this process alone; --document reads in this one). [default: auto: 2 when there are two cores and enough to read, else 1]", show_default=False)] = None,
    engine: EngineOpt = "numpy",
    device: DeviceOpt = "auto",
    encoding: EncodingOpt = None,
    errors: ErrorsOpt = None,
):
    """Score text: log P(text) = Σ log P(char | previous chars), including the final `<EOS>`.

    Reports the log-likelihood in nats, bits per character (`<EOS>` counted
    as a character), perplexity, and how many characters were `<UNK>`.
    """
    from charlm.corpus import encode_corpus, read_lines
    from charlm.files import text_source
    from charlm.score import score_document, score_sentences

    files, file = file or [], (file or [None])[0]
    if sources.is_many(files) and not document:
        fail("several --file or a folder are read as one corpus: give --document")

    if batch_size < 1:
        fail("--batch-size must be at least 1")
    if workers is not None and workers < 1:
        fail("--workers must be at least 1 (1: no worker processes); leave it out for auto")
    if workers is not None and workers > 1 and os.name != "posix":
        fail("--workers above 1 needs a POSIX system (Linux, macOS); use --workers 1")
    if show and as_json:
        fail("give --show (a picture) or --json (for scripts), not both")
    if show and document:
        fail("--show explains sentences; it does not combine with --document")
    if exact and not document:
        fail("--exact applies to --document only (sentences are always scored exactly)")
    if (sentences or []).count("-") > 1:
        fail("standard input is read once: give - once among the sentences")
    if engine != "numpy":   # --engine torch: PyTorch reads the network of sentences (one-line error without it)
        from charlm.torch_engine import check_engine, require_torch

        check_engine(engine)
        require_torch()
        if document or show:
            fail("--engine torch scores sentences; --document and --show read with --engine numpy")
    elif device != "auto":
        fail("--device applies to --engine torch")
    one_stdin(checkpoint=checkpoint_path(checkpoint), file=file, sentences="-" if "-" in (sentences or []) else None)
    ck = ckpt_io.load(checkpoint_path(checkpoint))
    refuse(ck.arch, "score")   # nor give a sentence likelihood
    params = ck.weights(weights)
    mix = None if network_only else ck.mixture(weights)
    sentences_given = sentences
    sentences = list(sentences or [])
    decoding = (encoding or ck.config.encoding, errors or ck.config.errors)
    if document:
        if file is None:
            fail("--document needs --file FILE (or --file - for stdin)")
        if sentences:
            fail("--document scores --file; do not also give sentences")
        source = sources.open_corpus(files, *decoding, what="file", on_skip=lambda p, why: warn(f"skipped {p}: {why}"))
        if isinstance(source, sources.FileSet):
            ids, file = sources.encode(source, ck.vocab, *decoding), source.label
        else:
            ids = encode_corpus(source, ck.vocab, *decoding, what="file")
        if len(ids) == 0:
            fail(f"{file} is empty")
        results = [score_document(params, ck.arch, ck.vocab, ids, file, exact=exact, mix=mix)]
    else:
        if "-" in sentences:   # a lone - among the sentences: the lines of stdin, in its place
            at = sentences.index("-")
            sentences[at:at + 1] = read_lines(text_source("-", "sentences"), *decoding, what="standard input")
        if file is not None:
            sentences += read_lines(text_source(file, "file"), *decoding)
        if not sentences:
            given = (f"{file} has no lines" if file is not None else "standard input has no lines"
                     if "-" in (sentences_given or []) else "give sentences, --file FILE, or - to read stdin")
            fail(f"nothing to score: {given}")
        if engine != "numpy":   # under torchrun the ranks share the batches; rank 0 prints
            from charlm.torch_engine.score import score_on_engine

            results, leader = score_on_engine(params, ck.arch, ck.vocab, sentences, device, batch_size, mix)
            if not leader:
                return
        else:
            results = score_sentences(params, ck.arch, ck.vocab, sentences, batch_size=batch_size, mix=mix,
                                      workers=workers,
                                      on_failure=lambda msg: warn(f"scoring workers: {msg}; this process reads the "
                                                                  "remaining batches (--workers 1 does so from the start)"))
    if as_json:
        for r in results:
            print(json_line(r.to_json()))
        return
    from charlm.cli.render import heat_legend, heat_map, score_table

    out.print(score_table(results))
    if show:
        from charlm.score import explain

        out.print(heat_legend())
        for r in results:
            out.print(heat_map(explain(params, ck.arch, ck.vocab, r.text, mix=mix)))
    if document:
        r = results[0]
        by = "" if mix is None else f", by the network interpolated with its {mix.ngram.order}-gram (network share {mix.weight:.2f})"
        err.print(f"{r.num_tokens:,} tokens ({r.num_eos:,} <EOS>, {r.num_unk:,} <UNK>) scored as one sequence{by}")
    elif any(r.num_unk for r in results):
        err.print("characters outside the vocabulary were scored as <UNK>")
