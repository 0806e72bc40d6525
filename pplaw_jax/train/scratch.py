"""From-scratch models: random init from an HF-style config, and a BPE tokenizer trained on a corpus.

`pplaw train --model scratch:CONFIG.json --tokenizer DIR` pretrains a small Llama-family model
(e.g. a base model for cheap CPT experiments); `train_tokenizer` makes the tokenizer for it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import publish_modes, staging_dir
from pplaw_jax.paths import PathSpec, as_path, is_url, local_path, localize, upload_tree

SCRATCH_PREFIX = "scratch:"


def load_for_training(
    spec: str,
    *,
    tokenizer_dir: str | None,
    dtype: str,
    seed: int,
    remat: str | bool = False,
    mesh=None,
    scan_layers: bool = False,
):
    """A `LoadedModel` for `pplaw train`: a checkpoint via `load_model`, or `scratch:CONFIG.json`.

    Scratch models are initialised with `seed` (float32 parameters, `dtype` compute) and need a
    tokenizer directory saved by `Tokenizer.save` whose ids fit the config's vocabulary. With
    `mesh`, the parameters are created (read or initialised) straight in their shards. `remat`
    and `scan_layers` are `LlamaForCausalLM`'s.
    """
    from pplaw_jax.models import LoadedModel, ModelConfig, Tokenizer, init_model, load_model

    if not spec.startswith(SCRATCH_PREFIX):
        if tokenizer_dir is not None:
            raise PplawError("--tokenizer is only for --model scratch:CONFIG.json (checkpoints bring their own)")
        return load_model(spec, dtype=dtype, mesh=mesh, remat=remat, scan_layers=scan_layers)
    path = as_path(spec[len(SCRATCH_PREFIX) :])
    if tokenizer_dir is None:
        raise PplawError(f"--model {spec} needs --tokenizer DIR (see pplaw_jax.train.train_tokenizer)")
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise PplawError(f"{path}: cannot read the model config ({e.strerror})") from e
    except ValueError as e:
        raise PplawError(f"{path}: invalid JSON ({e})") from e
    config = ModelConfig.from_hf(raw)
    tokenizer = Tokenizer.load(localize(tokenizer_dir) if is_url(tokenizer_dir) else tokenizer_dir)
    if tokenizer.vocab_size > config.vocab_size:
        raise PplawError(
            f"{path}: vocab_size {config.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.vocab_size} ({tokenizer_dir})"
        )
    model = init_model(config, seed=seed, dtype=dtype, mesh=mesh, remat=remat, scan_layers=scan_layers)
    return LoadedModel(config=config, model=model, tokenizer=tokenizer, source=str(path))


def train_tokenizer(
    data_spec: str,
    vocab_size: int,
    out_dir: PathSpec,
    max_docs: int | None = None,
    *,
    text_field: str = "text",
    id_field: str = "id",
):
    """Train a byte-level BPE tokenizer on (the first `max_docs` documents of) a corpus.

    Writes tokenizer files that `Tokenizer.load` and transformers read to `out_dir` (assembled
    under a temporary name, then renamed) and returns the `Tokenizer`.
    """
    from pplaw_jax.data import iter_documents
    from pplaw_jax.models import train_bpe_tokenizer

    docs = iter_documents(data_spec, text_field=text_field, id_field=id_field, max_docs=max_docs)
    tokenizer = train_bpe_tokenizer((d.text for d in docs), vocab_size)
    if is_url(out_dir):  # no rename on an object store: saved locally, then uploaded file by file
        out = as_path(out_dir)
        if out.exists():
            raise PplawError(f"{out}: already exists; refusing to overwrite a tokenizer")
        with tempfile.TemporaryDirectory(prefix="pplaw-tokenizer-") as d:
            tokenizer.save(d)
            upload_tree(d, out)
        return tokenizer
    out = local_path(out_dir)
    if out.exists():
        raise PplawError(f"{out}: already exists; refusing to overwrite a tokenizer")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(out)
    try:
        tokenizer.save(tmp)
        publish_modes(tmp)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tokenizer
