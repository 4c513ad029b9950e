"""`charlm sample`: generate text from a trained model and print it as it comes."""

from __future__ import annotations

import math
from typing import Annotated, Optional

import numpy as np
import typer

from charlm import checkpoint as ckpt_io
from charlm import stops
from charlm.beam import LENGTH_PENALTY, MAX_BEAM
from charlm.bidirectional import refuse
from charlm.cli.app import app, handle_errors
from charlm.cli.console import err, fail, out, warn
from charlm.cli.options import (CheckpointOpt, EncodingOpt, ErrorsOpt, NetworkOnlyOpt, WeightsOpt, checkpoint_path,
                                one_stdin)


@app.command(epilog="""**Examples**

```
charlm sample                                  # one sample from charlm.npz
charlm sample --num 10 --temperature 0.8
charlm sample --greedy --prime "ROMEO:" --length 300 --no-stop-at-eos
charlm sample -c names.npz --top-k 5 --seed 7 --show-logprob
charlm sample -c names.npz --beam 8 --num 3 --show-logprob
charlm sample --prime "ROMEO:" --no-stop-at-eos --stop "\\n\\n"
```
""")
@handle_errors
def sample(
    checkpoint: CheckpointOpt = None,
    length: Annotated[int, typer.Option("-n", "--length", help="Maximum characters per sample.")] = 200,
    temperature: Annotated[Optional[float], typer.Option("-t", "--temperature", help="Softmax temperature (0 = greedy; <1 safer, >1 wilder). [default: 1]", show_default=False)] = None,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always take the most likely character (same as --temperature 0).")] = False,
    top_k: Annotated[int, typer.Option(help="Sample only from the k most likely characters (0 = all).")] = 0,
    top_p: Annotated[float, typer.Option(help="Sample from the smallest set of characters with this much probability (1 = all).")] = 1.0,
    prime: Annotated[Optional[str], typer.Option(help="Text the model reads first (printed before the sample).", show_default=False)] = None,
    prime_file: Annotated[Optional[str], typer.Option(help="Read the prime from a file (- for stdin).", show_default=False)] = None,
    echo_prime: Annotated[bool, typer.Option("--echo-prime/--no-echo-prime", help="Print the prime before each sample.")] = True,
    num: Annotated[int, typer.Option(help="Number of independent samples (generated as one batch).")] = 1,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (same seed, same text). [default: random]", show_default=False)] = None,
    stop_at_eos: Annotated[Optional[bool], typer.Option("--stop-at-eos/--no-stop-at-eos", help="End a sample at `<EOS>` (end of line). [default: on for a list of items (no blank lines), off for prose]", show_default=False)] = None,
    show_logprob: Annotated[bool, typer.Option("--show-logprob", help="After each sample, print its log-probability under the model (to stderr).")] = False,
    weights: WeightsOpt = "best",
    network_only: NetworkOnlyOpt = False,
    beam: Annotated[Optional[int], typer.Option(help="Beam search: the most probable texts, found with this many candidates advancing together; prints the --num best, most probable first (deterministic).", show_default=False)] = None,
    length_penalty: Annotated[Optional[float], typer.Option(help=f"With --beam: rank candidates by log P / length^A (0: log P alone, which favours short items). [default: {LENGTH_PENALTY:g}]", show_default=False)] = None,
    stop: Annotated[Optional[list[str]], typer.Option(help="End a sample when it produces this text (printed with it; repeatable; \\n is a newline).", show_default=False)] = None,
    encoding: EncodingOpt = None,
    errors: ErrorsOpt = None,
):
    """Generate text from a trained model, greedily, by sampling the softmax, or by beam search."""
    from charlm.cli.render import fmt_logprob
    from charlm.files import text_source
    from charlm.sample import check_batch_fits, generate_texts

    stop_list = stops.Stops([stops.parse(t) for t in stop or []])
    if beam is not None or length_penalty is not None:   # beam search (charlm.beam)
        if beam is None:
            fail("--length-penalty ranks the candidates of --beam: give --beam K")
        if not 1 <= beam <= MAX_BEAM:
            fail(f"--beam must be from 1 to {MAX_BEAM}, not {beam}")
        if num > beam:
            fail(f"--num {num} is more than the --beam {beam} candidates: give --num at most {beam}")
        if length_penalty is not None and not (0 <= length_penalty <= 10):
            fail("--length-penalty must be a number from 0 to 10")
        given = [name for name, on in (("--greedy", greedy), ("--temperature", temperature is not None),
                                        ("--top-k", top_k != 0), ("--top-p", top_p != 1.0)) if on]
        if given:
            fail(f"--beam searches for the most probable texts: {given[0]} (for sampling) does not apply")
    if length < 1:
        fail("--length must be at least 1")
    if greedy and temperature not in (None, 0):
        fail("give --greedy or --temperature, not both (--greedy is --temperature 0)")
    temperature = 1.0 if temperature is None else temperature
    if temperature < 0 or not math.isfinite(temperature):
        fail("--temperature must be a finite number ≥ 0 (0 means greedy)")
    if num < 1:
        fail("--num must be at least 1")
    if top_k < 0:
        fail("--top-k must be ≥ 0 (0 = no limit)")
    if not (0 < top_p <= 1):
        fail("--top-p must be in (0, 1]")
    if seed is not None and seed < 0:
        fail("--seed must be non-negative")
    if prime is not None and prime_file is not None:
        fail("give --prime or --prime-file, not both")
    one_stdin(checkpoint=checkpoint_path(checkpoint), prime_file=prime_file)
    ck = ckpt_io.load(checkpoint_path(checkpoint))
    refuse(ck.arch, "sample")   # a bidirectional model cannot generate
    V = len(ck.vocab)
    if top_k > V:
        fail(f"--top-k {top_k} is larger than the vocabulary ({V} tokens)")
    rows = num if beam is None else beam + 1     # (beam search: the K candidates and the greedy row)
    check_batch_fits(rows, V, ck.arch, length, len(prime or "") if prime_file is None else 0)
    if prime_file is not None:
        from charlm.corpus import iter_text
        prime = "".join(iter_text(text_source(prime_file, "prime file"), encoding or ck.config.encoding, errors or ck.config.errors,
                                  what="prime file"))
    params = ck.weights(weights)
    mix = None if network_only else ck.mixture(weights)
    prime_ids = None
    if prime:
        prime_ids = ck.vocab.encode(prime)
        unknown = sorted({c for c, i in zip(prime, prime_ids) if i == 1 and c != "\n"})
        if unknown:
            warn(f"the prime has characters outside the vocabulary, read as <UNK>: {' '.join(map(repr, unknown))}")
    if stop_at_eos is None:
        stop_at_eos = bool(ck.meta.get("corpus", {}).get("line_items", False))
    if beam is not None:
        _print_beams(ck, params, mix, beam, num, length, prime or "", prime_ids, echo_prime, stop_at_eos,
                     LENGTH_PENALTY if length_penalty is None else length_penalty, stop_list, show_logprob)
        return
    rng = np.random.default_rng(seed)
    T = 0.0 if greedy else temperature
    stream = out.file
    head = (prime or "") if echo_prime else ""
    live = num == 1

    def show(n: int, chars: str) -> None:   # one sample is printed as it is written
        stream.write(chars)
        stream.flush()

    if live and head:
        show(0, head)
    matcher = stops.Matcher(stop_list, ck.vocab, num) if stop_list else None
    samples = generate_texts(params, ck.arch, ck.vocab, rng, num, length, T, top_k, top_p, prime_ids, stop_at_eos,
                             mix, on_text=show if live else None, stop=matcher)
    for n, s in enumerate(samples):
        if not live:
            stream.write(head + s.text)
        if not (head + s.text).endswith("\n"):
            stream.write("\n")
        if not stop_at_eos and num > 1 and n < num - 1:
            stream.write("\n")
        stream.flush()
        if show_logprob:
            err.print(f"sample {n + 1}: {fmt_logprob(s.logprob, s.tokens)}")


def _print_beams(ck, params, mix, beam, num, length, prime, prime_ids, echo_prime, stop_at_eos, length_penalty,
                 stop_list, show_logprob) -> None:
    """`sample --beam`: the --num best of a beam search, most probable first, as `sample` prints samples."""
    from charlm.beam import search
    from charlm.cli.render import fmt_logprob
    best = search(params, ck.arch, beam, length, prime_ids, stop_at_eos, mix, length_penalty, stop_list,
                  ck.vocab)[:num]
    head = prime if echo_prime else ""
    for n, h in enumerate(best):
        text = head + h.text(ck.vocab, stop_at_eos)
        out.file.write(text if text.endswith("\n") else text + "\n")
        if not stop_at_eos and len(best) > 1 and n < len(best) - 1:
            out.file.write("\n")
        out.file.flush()
        if show_logprob:
            err.print(f"sample {n + 1}: {fmt_logprob(h.log_prob, len(h.ids))}")
