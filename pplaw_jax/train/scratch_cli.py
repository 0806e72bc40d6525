"""``pplaw scratch``: what `pplaw train --model scratch:...` starts from — a BPE tokenizer trained
on a corpus and an HF-style config for a small Llama with that vocabulary.

    pplaw scratch --data GENERAL --vocab-size 2048 --out BASE [--max-docs N] KEY=VALUE ...

Writes ``BASE/tokenizer/`` and, last, ``BASE/init_config.json`` (the ``KEY=VALUE`` fields, values
parsed as YAML, with ``vocab_size`` set; checked by loading it as a `ModelConfig`). Then
``pplaw train --model scratch:BASE/init_config.json --tokenizer BASE/tokenizer ...`` pretrains it.
A directory that already holds both is left as it is.
"""

from __future__ import annotations

import argparse
import json

from pplaw_jax.commands import ScratchCommand, add_command
from pplaw_jax.paths import as_path, is_url, rmtree

INIT_CONFIG = "init_config.json"
TOKENIZER = "tokenizer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_command(parser, ScratchCommand)


def run(args: ScratchCommand) -> int:
    import yaml

    from pplaw_jax.errors import PplawError
    from pplaw_jax.fileio import write_text
    from pplaw_jax.models import ModelConfig
    from pplaw_jax.train.scratch import train_tokenizer

    out = as_path(args.out)
    if args.vocab_size < 2:
        raise PplawError(f"--vocab-size must be >= 2, got {args.vocab_size}")
    fields = {}
    for item in args.fields:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise PplawError(f"config field {item!r} is not of the form KEY=VALUE")
        fields[key] = yaml.safe_load(raw)
    fields["vocab_size"] = args.vocab_size
    try:
        ModelConfig.from_hf(fields)  # a field the decoder cannot build fails now, not at train time
    except PplawError as e:  # it names config.json: here the fields are the KEY=VALUE arguments
        raise PplawError(f"the KEY=VALUE fields: {str(e).removeprefix('config.json: ')}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise PplawError(f"the KEY=VALUE fields do not describe a model: {e!r}") from None
    text = json.dumps(fields, indent=1)
    if (out / INIT_CONFIG).exists() and (out / TOKENIZER).exists():
        if (out / INIT_CONFIG).read_text() != text:
            raise PplawError(f"{out} holds another scratch model ({out / INIT_CONFIG}); use a new --out")
        return 0
    if is_url(out) and not (out / INIT_CONFIG).exists():
        rmtree(out / TOKENIZER)  # uploaded file by file, complete only once init_config.json is written
    if not (out / TOKENIZER).exists():
        tokenizer = train_tokenizer(
            args.data,
            args.vocab_size,
            out / TOKENIZER,
            max_docs=args.max_docs,
            text_field=args.text_field,
            id_field=args.id_field,
        )
        if tokenizer.vocab_size < args.vocab_size:  # the model would carry embeddings no token reaches
            rmtree(out / TOKENIZER)
            raise PplawError(
                f"--vocab-size {args.vocab_size}: the corpus yields only {tokenizer.vocab_size} tokens "
                f"(byte-level BPE ran out of merges); lower --vocab-size or give more --max-docs"
            )
    write_text(out / INIT_CONFIG, text)
    return 0
