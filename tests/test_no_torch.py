"""Every way of naming a model works where torch cannot be imported, as after a plain
`pip install -e .` (torch is only in the `[test]` extra): a checkpoint directory, a `.gguf` file
(its tokenizer rebuilt from the metadata), and a Hugging Face id found in the local cache.

The models are written here with torch (the reference); the scoring runs in a subprocess where
`sys.modules["torch"] = None`, which makes `import torch` fail and `importlib.util.find_spec("torch")`
return None, exactly what transformers sees on a machine without torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from tiny_hf import WORDS, save_tiny_llama, write_gguf

from pplaw_jax.landscape.directory import read_parts

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SCORE_WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None
from pplaw_jax.cli import main
specs, data, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
for name, spec in specs.items():
    rc = main(["score", "--model", spec, "--data", data, "--out", f"{out}/{name}", "--seq-len", "16"])
    assert rc == 0, (name, rc)
assert "torch" not in sys.modules or sys.modules["torch"] is None
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(HF checkpoint dir, the same model as a .gguf, HF_HOME holding it as acme/tiny-llama, corpus)."""
    root = tmp_path_factory.mktemp("no_torch")
    model_dir = save_tiny_llama(root / "hf", seed=3)
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    from pplaw_jax.models import load_model

    write_gguf(hf, root / "tiny.gguf", "llama", tokenizer=load_model(str(model_dir)).tokenizer)
    # the layout huggingface_hub's cache keeps: refs/main names the snapshot folder
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / "hf_home" / "hub" / "models--acme--tiny-llama"
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    rng = np.random.default_rng(0)
    corpus = root / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": " ".join(rng.choice(WORDS, 30 + 5 * i))}) + "\n" for i in range(6))
    )
    return model_dir, root / "tiny.gguf", root / "hf_home", corpus


def test_gguf_tokenizer_matches_transformers_and_the_original(models):
    """The tokenizer rebuilt from the GGUF metadata (no torch) gives the ids transformers' own
    GGUF tokenizer and the tokenizer the file was written from give."""
    from pplaw_jax.models import load_model
    from pplaw_jax.models.gguf import load_gguf_tokenizer

    model_dir, gguf_path, _, _ = models
    ours = load_gguf_tokenizer(gguf_path)
    original = load_model(str(model_dir)).tokenizer
    reference = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    texts = [" ".join(WORDS), "the zebras  graze\nnear the mill, quietly!", "naïve café 東京"]
    for text in texts:
        ids = ours.encode(text)
        assert ids == reference(text, add_special_tokens=False)["input_ids"] == original.encode(text)
        assert ours.decode(ids) == text
    assert (ours.bos_id, ours.eos_id, ours.vocab_size) == (original.bos_id, original.eos_id, original.vocab_size)


def test_every_model_spec_scores_without_torch(models, tmp_path):
    model_dir, gguf_path, hf_home, corpus = models
    specs = {"dir": str(model_dir), "gguf": str(gguf_path), "hub": "acme/tiny-llama", "hub_rev": "acme/tiny-llama@main"}
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hf_home / "hub"))
    proc = subprocess.run(
        [sys.executable, "-c", SCORE_WITHOUT_TORCH, json.dumps(specs), str(corpus), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    frames = {name: read_parts(tmp_path / name) for name in specs}
    ref = frames["dir"].sort_values(["doc_id", "chunk"]).reset_index(drop=True)
    assert len(ref) > 6 and ref.sum_nll.std() > 0.5
    for name, frame in frames.items():
        got = frame.sort_values(["doc_id", "chunk"]).reset_index(drop=True)
        assert got[["doc_id", "chunk", "n_tokens"]].equals(ref[["doc_id", "chunk", "n_tokens"]]), name
        np.testing.assert_allclose(got.sum_nll, ref.sum_nll, rtol=1e-5, err_msg=name)


def test_an_uncached_hub_id_is_one_line_naming_the_cache(models, tmp_path):
    _, _, hf_home, corpus = models
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hf_home / "hub"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pplaw_jax",
            "score",
            "--model",
            "acme/not-there",
            "--data",
            str(corpus),
            "--out",
            str(tmp_path / "o"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "acme/not-there" in lines[0] and str(hf_home / "hub") in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()
