"""`charlm build-vocab`: count a corpus's characters and write the vocabulary."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from charlm.cli.app import app, handle_errors
from charlm.cli.console import err, fail, warn
from charlm.files import check_writable


@app.command("build-vocab", epilog="""**Examples**

```
charlm build-vocab corpora/names.txt -o names.vocab.json
charlm build-vocab poems/ a.txt -o poems.vocab.json
charlm build-vocab big.txt --min-count 5 --max-size 120
cat notes.txt | charlm build-vocab - -o notes.vocab.json
```
""")
@handle_errors
def build_vocab_cmd(
    corpus: Annotated[list[str], typer.Argument(help="Text (UTF-8), one sequence per line: a file, several files, or a folder (read recursively); - for stdin.", show_default=False)],
    output: Annotated[str, typer.Option("-o", "--output", help="Where to write the vocabulary JSON (- for stdout).")] = "vocab.json",
    min_count: Annotated[int, typer.Option(help="Characters seen fewer times become `<UNK>`.")] = 1,
    max_size: Annotated[Optional[int], typer.Option(help="Keep at most this many tokens (`<EOS>` and `<UNK>` included), the most frequent.", show_default=False)] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the corpus.")] = "utf-8",
    errors: Annotated[str, typer.Option(help="On undecodable bytes: strict (stop), replace, ignore, surrogateescape.")] = "strict",
):
    """Build a character vocabulary: `<EOS>` = 0, `<UNK>` = 1, then the kept characters in code-point order."""
    from charlm import sources
    from charlm.cli.render import vocab_table
    from charlm.vocab import build_vocab, looks_like_vocab, save_vocab, vocab_json

    if min_count < 1:
        fail("--min-count must be at least 1")
    if max_size is not None and max_size < 3:
        fail("--max-size must be at least 3 (<EOS>, <UNK> and a character)")
    inputs, corpus = corpus, " ".join(corpus)
    if output != "-":
        check_writable(output, {"corpus": inputs}, replaces=("vocabulary", "-o", looks_like_vocab))
    source = sources.open_corpus(inputs, encoding, errors, on_skip=lambda p, why: warn(f"skipped {p}: {why}"))
    stats = sources.count(source, encoding, errors)
    if stats.num_chars == 0:
        fail(f"corpus {corpus} is empty: it has no characters")
    vocab = build_vocab(stats.counts, min_count, max_size)
    err.print(vocab_table(vocab, stats.num_chars, stats.num_lines))
    if len(vocab) == 2:
        warn(f"no character is seen {min_count:,} times: the vocabulary is only <EOS> and <UNK>, "
             "and a model trained with it would read every character as <UNK>")
    if output == "-":
        sys.stdout.write(vocab_json(vocab))
        sys.stdout.flush()
        return
    save_vocab(vocab, output)
    err.print(f"wrote {output}")
