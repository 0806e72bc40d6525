"""Every command on object-store URLs, on fsspec's in-memory filesystem (``memory://``).

References: the same command on a local directory (rows, selections and fits identical), an
uninterrupted run for a killed and resumed one (same rows, same per-step losses), and the path
layer's pathlib behaviour for local paths. The memory filesystem is one store per process, shared
by the in-process `main([...])` calls; it is emptied around every test.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pplaw_jax.cli import main
from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import atomic_write, check_output_path, discard_temporaries, output_lock, write_json
from pplaw_jax.paths import URLPath, append_text, as_path, localize, move, upload_tree


@pytest.fixture(autouse=True)
def memfs(tmp_path, monkeypatch):
    """An empty memory filesystem, and a private $PPLAW_CACHE (model copies, training working copies)."""
    from fsspec.implementations.memory import MemoryFileSystem

    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs[:] = [""]
    monkeypatch.setenv("PPLAW_CACHE", str(tmp_path / "cache"))
    yield
    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs[:] = [""]


def objects(url: str) -> list[str]:
    return sorted(str(p) for p in as_path(url).rglob("*") if p.is_file())


# ---------------------------------------------------------------------- the path layer
def test_path_layer_local_is_pathlib_and_urls_behave_like_it(tmp_path):
    assert as_path(str(tmp_path)) == tmp_path and type(as_path(str(tmp_path))) is type(tmp_path)
    assert as_path(f"file://{tmp_path}") == tmp_path
    root = as_path("memory://bucket/study")
    assert isinstance(root, URLPath) and str(root / "a" / "b.json") == "memory://bucket/study/a/b.json"
    p = root / "parts" / "host000-part00001.done"
    assert (p.name, p.stem, p.suffix) == ("host000-part00001.done", "host000-part00001", ".done")
    assert str(p.with_suffix(".parquet")) == "memory://bucket/study/parts/host000-part00001.parquet"
    assert (
        str(p.parent) == "memory://bucket/study/parts"
        and p.relative_to(root).as_posix() == "parts/host000-part00001.done"
    )
    assert not root.exists() and not p.exists()
    root.mkdir(parents=True, exist_ok=True)  # no directories on an object store: nothing to make
    p.write_text("{}")
    assert p.is_file() and not p.is_dir() and root.is_dir() and (root / "parts").is_dir()
    assert [q.name for q in (root / "parts").glob("*.done")] == [p.name]
    assert [str(q) for q in root.rglob("*.done")] == [str(p)]
    assert [q.name for q in root.iterdir()] == ["parts"]
    with pytest.raises(TypeError):
        open(p)  # no __fspath__: a URL never silently becomes a local file name
    p.unlink()
    p.unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        p.unlink()
    with pytest.raises(FileNotFoundError):
        (root / "nothing").iterdir()


def test_atomic_writes_locks_and_moves_on_urls(tmp_path):
    target = as_path("memory://b/dir/table.csv")
    atomic_write(target, lambda tmp: pd.DataFrame({"x": [1, 2]}).to_csv(tmp, index=False))
    assert target.read_text() == "x\n1\n2\n"

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_text() == "x\n1\n2\n"  # the object is the old one or the whole new one
    assert objects("memory://b") == ["memory://b/dir/table.csv"]  # nothing temporary on the store
    discard_temporaries("memory://b/dir")  # nothing to discard there; must not fail
    with output_lock("memory://b/dir") as held:  # no locks on an object store
        assert held == as_path("memory://b/dir")
    check_output_path("memory://b/dir", "dir")
    with pytest.raises(PplawError, match="memory://b/dir/table.csv: exists and is not a directory"):
        check_output_path("memory://b/dir/table.csv", "dir")
    with pytest.raises(PplawError, match="is a directory"):
        check_output_path("memory://b/dir", "file")
    append_text("memory://b/log", "one\n")
    append_text("memory://b/log", "two\n")
    assert as_path("memory://b/log").read_text() == "one\ntwo\n"
    move("memory://b/dir", "memory://b/moved/dir")
    assert objects("memory://b") == ["memory://b/log", "memory://b/moved/dir/table.csv"]


def test_localize_copies_once_and_again_when_the_object_changes(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "sub").mkdir()
    (tmp_path / "m" / "sub" / "w.bin").write_bytes(b"\0" * 10)
    upload_tree(tmp_path / "m", "memory://b/model")
    first = localize("memory://b/model")
    assert first.name == "model" and (first / "sub" / "w.bin").read_bytes() == b"\0" * 10
    (first / "marker").write_text("same copy")
    assert localize("memory://b/model") == first and (first / "marker").exists()
    as_path("memory://b/model/config.json").write_text('{"changed": 1}')
    second = localize("memory://b/model")
    assert second != first and (second / "config.json").read_text() == '{"changed": 1}'
    with pytest.raises(PplawError, match="memory://b/none: no such object"):
        localize("memory://b/none")


@pytest.mark.parametrize("scheme, package, extra", [("gs", "gcsfs", "gcs"), ("s3", "s3fs", "s3")])
def test_a_missing_backend_names_the_extra(scheme, package, extra, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # `import gcsfs` fails, installed or not
    with pytest.raises(
        PplawError,
        match=rf"{scheme}:// paths need the {package} package; install it with "
        rf"pip install {package} \(or, in the pplaw_jax checkout, "
        rf"pip install -e '\.\[{extra}\]'\)",
    ):
        as_path(f"{scheme}://bucket/x")
    assert (
        main(["select", "--landscape", f"{scheme}://bucket/land", "--tokens", "100", "--out", f"{scheme}://bucket/sel"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"pip install -e '.[{extra}]'" in err
    assert (
        main(["fit", "--moments", "ppl", "--runs", f"{scheme}://bucket/runs.csv", "--out", "local_never_written"]) == 2
    )
    assert f"'.[{extra}]'" in capsys.readouterr().err
    assert not Path("local_never_written").exists()


# ---------------------------------------------------------------------- pplaw score
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny HF Llama and a corpus, on local disk (uploaded to memory:// by each test)."""
    from tiny_hf import WORDS, save_tiny_llama

    root = tmp_path_factory.mktemp("objstore")
    save_tiny_llama(root / "model", seed=0)
    rng = np.random.default_rng(0)
    docs = [
        {"id": f"t{i:02d}", "text": " ".join(rng.choice(WORDS, size=n))}
        for i, n in enumerate([3, 60, 17, 150, 1, 45, 90, 33, 8, 120, 0, 40])
    ]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return root


def _rows(landscape):
    from pplaw_jax.landscape.directory import read_landscape, read_parts

    read_landscape(landscape)  # complete and consistent
    return read_parts(landscape)


def test_score_on_memory_gives_the_local_rows_and_resumes_after_a_kill(tiny, tmp_path, monkeypatch):
    from pplaw_jax.landscape import directory

    upload_tree(tiny / "model", "memory://b/model")
    as_path("memory://b/corpus.jsonl").write_bytes((tiny / "corpus.jsonl").read_bytes())
    flags = ["--seq-len", "24", "--docs-per-part", "3"]
    assert (
        main(
            [
                "score",
                "--model",
                str(tiny / "model"),
                "--data",
                str(tiny / "corpus.jsonl"),
                "--out",
                str(tmp_path / "land"),
                *flags,
            ]
        )
        == 0
    )
    local = _rows(tmp_path / "land")

    remote = [
        "score",
        "--model",
        "memory://b/model",
        "--data",
        "memory://b/corpus.jsonl",
        "--out",
        "memory://b/land",
        *flags,
    ]
    write_part = directory.write_part

    def killed_at_part_2(out_dir, host, part, table, marker):
        if part == 2:
            raise KeyboardInterrupt("kill")
        write_part(out_dir, host, part, table, marker)

    monkeypatch.setattr(directory, "write_part", killed_at_part_2)
    assert main(remote) == 130  # an interrupt is one line and the shell's code (cli.main)
    assert not as_path("memory://b/land/summary.json").exists()
    done = [p.name for p in as_path("memory://b/land/parts").glob("*.done")]
    assert done == ["host000-part00000.done", "host000-part00001.done"]
    monkeypatch.setattr(directory, "write_part", write_part)
    # and a part whose rows were uploaded but whose marker was not: redone, never trusted
    as_path("memory://b/land/parts/host000-part00001.done").unlink()
    assert main(remote) == 0
    pd.testing.assert_frame_equal(_rows("memory://b/land"), local)
    summaries = [
        json.loads(as_path(p).read_text()) for p in ("memory://b/land/summary.json", tmp_path / "land" / "summary.json")
    ]
    for key in ("documents", "chunks", "tokens", "parts", "ppl", "logppl", "bits_per_byte"):
        assert summaries[0][key] == summaries[1][key], key
    run_args = json.loads(as_path("memory://b/land/run_args.json").read_text())
    local_args = json.loads((tmp_path / "land" / "run_args.json").read_text())
    assert run_args["model"] == "memory://b/model"
    assert run_args["model_content"] == local_args["model_content"]  # the same weights, wherever they are
    assert run_args["data_content"] == local_args["data_content"]
    for part in range(4):  # each part's bytes are the local run's
        name = f"parts/host000-part{part:05d}.parquet"
        assert as_path(f"memory://b/land/{name}").read_bytes() == (tmp_path / "land" / name).read_bytes()


# ---------------------------------------------------------------------- pplaw select and fit
@pytest.fixture()
def landscapes(tmp_path):
    from pplaw_jax.select.synthetic import synthetic_landscape, write_landscape

    table = synthetic_landscape(2000, seed=3)
    write_landscape(tmp_path / "land", table, rows_per_part=700)
    write_landscape("memory://b/land", table, rows_per_part=700)
    return table, tmp_path / "land"


def test_select_and_design_on_memory_match_local(landscapes, tmp_path):
    from pplaw_jax.select.io import read_selection

    table, land = landscapes
    for args in (
        ["--method", "random", "--seed", "3"],
        ["--method", "dos", "--target-mu", "22", "--target-sigma", "9"],
    ):
        assert main(["select", "--landscape", str(land), "--tokens", "1e5", "--out", str(tmp_path / "sel"), *args]) == 0
        assert (
            main(["select", "--landscape", "memory://b/land", "--tokens", "1e5", "--out", "memory://b/sel", *args]) == 0
        )
        assert (
            as_path("memory://b/sel/selection.parquet").read_bytes()
            == (tmp_path / "sel" / "selection.parquet").read_bytes()
        )
        ours, ref = (
            json.loads(as_path(p).read_text())
            for p in ("memory://b/sel/summary.json", tmp_path / "sel" / "summary.json")
        )
        assert ours.pop("landscape") == "memory://b/land" and ref.pop("landscape") == str(land)
        assert ours == ref
    assert len(read_selection("memory://b/sel")) == ours["n_chunks"]

    total = int(table["n_tokens"].to_numpy().sum())
    budgets = [str(total // 200), str(total // 50), str(total // 12)]
    design = ["--n", "5", "--centre", "1", "--moments", "logppl", "--budgets", *budgets]
    assert main(["select", "design", "--landscape", "memory://b/land", "--out", "memory://b/design", *design]) == 0
    assert main(["select", "design", "--landscape", str(land), "--out", str(tmp_path / "design"), *design]) == 0
    manifest = pd.read_csv("memory://b/design/manifest.csv")
    pd.testing.assert_frame_equal(manifest, pd.read_csv(tmp_path / "design" / "manifest.csv"))
    assert as_path("memory://b/design/design.json").is_file()
    for name in manifest.name:
        assert (
            as_path(f"memory://b/design/{name}/selection.parquet").read_bytes()
            == (tmp_path / "design" / name / "selection.parquet").read_bytes()
        )
    # a selection without its summary.json (written last) is never trained on
    as_path(f"memory://b/design/{manifest.name[0]}/summary.json").unlink()
    with pytest.raises(PplawError, match="no summary.json beside it"):
        read_selection(f"memory://b/design/{manifest.name[0]}")
    # nor a landscape without its summary.json
    as_path("memory://b/land/summary.json").unlink()
    assert main(["select", "--landscape", "memory://b/land", "--tokens", "1e5", "--out", "memory://b/sel2"]) == 2


def test_fit_predict_and_dos_from_a_fit_on_memory(landscapes, tmp_path, capsys):
    from pplaw_jax.fit.fitdir import load_fit, write_fit_json, write_posterior
    from pplaw_jax.fit.runs_table import read_runs_table, write_runs_table
    from pplaw_jax.law.bayes import import_arviz
    from pplaw_jax.law.synthetic import ppl_params_with_optimum, synthetic_runs

    runs = synthetic_runs(n=24, seed=12).drop(columns="loss_true")
    write_runs_table("memory://b/runs.csv", runs)
    write_runs_table(tmp_path / "runs.csv", runs)
    assert as_path("memory://b/runs.csv").read_bytes() == (tmp_path / "runs.csv").read_bytes()
    pd.testing.assert_frame_equal(read_runs_table("memory://b/runs.csv"), read_runs_table(tmp_path / "runs.csv"))
    flags = ["--method", "point", "--bootstrap", "8", "--no-compare"]
    assert main(["fit", "--moments", "ppl", "--runs", "memory://b/runs.csv", "--out", "memory://b/fit", *flags]) == 0
    assert (
        main(["fit", "--moments", "ppl", "--runs", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "fit"), *flags])
        == 0
    )
    ours, ref = load_fit("memory://b/fit"), load_fit(tmp_path / "fit")
    assert ours.point_params == ref.point_params
    assert ours.info["runs"]["sha256"] == ref.info["runs"]["sha256"] and ours.info["plots"] == ref.info["plots"]
    assert (
        main(
            [
                "predict",
                "--fit",
                "memory://b/fit",
                "--mu",
                "20",
                "--sigma",
                "8",
                "--tokens",
                "1e6",
                "--out",
                "memory://b/pred.csv",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["predict", "--fit", str(tmp_path / "fit"), "--mu", "20", "--sigma", "8", "--tokens", "1e6"]) == 0
    assert as_path("memory://b/pred.csv").read_text() == capsys.readouterr().out

    # DOS from a Bayesian fit directory on the store: posterior.nc is read from the URL
    point = ppl_params_with_optimum(20.0, 8.0, E=1.8, excess=0.3, tokens_at_excess=3e5)
    rng = np.random.default_rng(0)
    draws = {k: np.full(200, v) for k, v in point.items()}
    draws["alpha1"] = point["alpha1"] + rng.normal(0.0, 0.0003, 200)
    posterior = {k: v.reshape(2, -1) for k, v in draws.items()}
    posterior["noise"] = np.full_like(posterior["E"], 0.01)
    wide = [[m, s] for m in (1.0, 1e3) for s in (0.01, 1e3)] + [[30.0, 3.0]]
    info = {
        "law": "ppl",
        "param_names": list(point),
        "moments": "ppl",
        "point": {"params": point, "ci90": {}},
        "bayes": {"summary": {}, "optimum": None},
        "runs": {"n_runs": len(wide), "points": wide},
        "support": {"margin": 0.1},
    }
    for where in (as_path("memory://b/fit_bayes"), tmp_path / "fit_bayes"):
        where.mkdir(parents=True, exist_ok=True)
        write_posterior(where, import_arviz().from_dict(posterior=posterior))
        write_fit_json(where, info)
    _, land = landscapes
    assert (
        main(
            [
                "select",
                "--landscape",
                "memory://b/land",
                "--fit",
                "memory://b/fit_bayes",
                "--tokens",
                "1e5",
                "--out",
                "memory://b/dos",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "select",
                "--landscape",
                str(land),
                "--fit",
                str(tmp_path / "fit_bayes"),
                "--tokens",
                "1e5",
                "--out",
                str(tmp_path / "dos"),
            ]
        )
        == 0
    )
    assert (
        as_path("memory://b/dos/selection.parquet").read_bytes()
        == (tmp_path / "dos" / "selection.parquet").read_bytes()
    )
    summary = json.loads(as_path("memory://b/dos/summary.json").read_text())
    assert summary["target"]["source"] == "posterior" and summary["fit"] == "memory://b/fit_bayes"
    assert summary["fit_digest"] == json.loads((tmp_path / "dos" / "summary.json").read_text())["fit_digest"]


# ---------------------------------------------------------------------- pplaw train
TRAIN_CONFIG = {
    "model_type": "llama",
    "vocab_size": 320,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
}
TRAIN_WORDS = "the of and to in a is that for it as was with be by on not he this are or his from at which".split()


@pytest.fixture(scope="module")
def train_files(tmp_path_factory):
    """A base HF checkpoint, a training corpus and a test corpus, on local disk."""
    from pplaw_jax.models import ModelConfig, init_model, save_hf_checkpoint, train_bpe_tokenizer

    d = tmp_path_factory.mktemp("objstore_train")
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(TRAIN_WORDS, size=int(rng.integers(4, 80)))) for _ in range(36)]
    (d / "train.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    (d / "test.jsonl").write_text(
        "".join(json.dumps({"id": f"e{i}", "text": t}) + "\n" for i, t in enumerate(texts[:5]))
    )
    tokenizer = train_bpe_tokenizer(texts, 300)
    config = ModelConfig.from_hf(TRAIN_CONFIG)
    save_hf_checkpoint(init_model(config, seed=1), config, tokenizer, d / "base")
    return d, texts, tokenizer


def test_train_on_memory_resumes_from_the_url_on_another_machine(train_files, tmp_path, monkeypatch):
    """Data, selection, model and --out on memory://: killed mid-run, the local working copy lost,
    the same command resumes from the URL's last uploaded checkpoint and reproduces the
    uninterrupted local run's losses step for step and its exported weights."""
    import pplaw_jax.train.loop as loop
    from pplaw_jax.data import chunk_token_ids
    from pplaw_jax.paths import cache_root
    from pplaw_jax.train.metrics import read_metrics

    d, texts, tokenizer = train_files
    upload_tree(d / "base", "memory://b/base")
    for name in ("train.jsonl", "test.jsonl"):
        as_path(f"memory://b/{name}").write_bytes((d / name).read_bytes())
    as_path("memory://b/valid.jsonl").write_bytes((d / "test.jsonl").read_bytes())  # mechanics only
    rows = [
        (f"d{i}", k, len(c) - 1, 10.0 + i)
        for i, t in enumerate(texts)
        for k, c in enumerate(chunk_token_ids(tokenizer.encode(t), 24, tokenizer.doc_start_id))
        if (i + k) % 2 == 0
    ]
    selection = pd.DataFrame(rows, columns=["doc_id", "chunk", "n_tokens", "ppl"])
    for sel in (tmp_path / "sel", as_path("memory://b/sel")):
        sel.mkdir(parents=True, exist_ok=True)
        atomic_write(sel / "selection.parquet", lambda tmp: selection.to_parquet(tmp))
        write_json(sel / "summary.json", {"n_chunks": len(rows)})

    flags = [
        "--seq-len",
        "24",
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--steps",
        "6",
        "--save-every",
        "2",
        "--eval-every",
        "4",
    ]
    assert (
        main(
            [
                "train",
                "--model",
                str(d / "base"),
                "--data",
                str(d / "train.jsonl"),
                "--selection",
                str(tmp_path / "sel"),
                "--eval-data",
                str(d / "test.jsonl"),
                "--out",
                str(tmp_path / "ref"),
                *flags,
            ]
        )
        == 0
    )
    ref = read_metrics(tmp_path / "ref" / "metrics.jsonl")
    remote = [
        "train",
        "--model",
        "memory://b/base",
        "--data",
        "memory://b/train.jsonl",
        "--selection",
        "memory://b/sel",
        "--eval-data",
        "memory://b/test.jsonl",
        "--out",
        "memory://b/run",
        *flags,
    ]

    step = loop.Trainer.step
    calls = {"n": 0}

    def killed_at_step_5(self, *args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("kill")
        return step(self, *args)

    monkeypatch.setattr(loop.Trainer, "step", killed_at_step_5)
    assert main(remote) == 130
    monkeypatch.setattr(loop.Trainer, "step", step)
    assert not as_path("memory://b/run/eval.json").exists()
    assert json.loads(as_path("memory://b/run/checkpoints.json").read_text()) == {"steps": [2, 4]}
    shutil.rmtree(cache_root() / "runs")  # resume elsewhere: only the URL holds the run

    assert main(remote) == 0
    rows_ = [json.loads(line) for line in as_path("memory://b/run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_] == list(range(1, 7))
    for a, b in zip(rows_, ref):
        for key in ("tokens", "train_loss", "lr", "grad_norm", "domain_loss"):
            assert a.get(key) == b.get(key), (a["step"], key)
    ours, theirs = (
        json.loads(as_path(p).read_text()) for p in ("memory://b/run/eval.json", tmp_path / "ref" / "eval.json")
    )
    for key in ("domain_loss", "mu_ppl", "sigma_ppl", "tokens", "sequences", "steps", "trained_tokens"):
        assert ours[key] == theirs[key], key
    assert json.loads(as_path("memory://b/run/checkpoints.json").read_text()) == {"steps": [4, 6]}
    assert sorted(p.name for p in as_path("memory://b/run/checkpoints").iterdir() if p.is_dir()) == ["4", "6"]
    assert not any((cache_root() / "runs").rglob("*.ocdbt"))  # the working copy is gone once complete
    assert (
        as_path("memory://b/run/hf/model.safetensors").read_bytes()
        == (tmp_path / "ref" / "hf" / "model.safetensors").read_bytes()
    )
    assert main(remote) == 0  # complete: nothing to do


# ---------------------------------------------------------------------- pplaw run
def _study_tree(train_files, out_dir):
    return {
        "name": "memory",
        "seed": 0,
        "out_dir": out_dir,
        "base_model": "memory://b/base",
        "data": {
            "domain_train": "memory://b/train.jsonl",
            "domain_valid": "memory://b/valid.jsonl",
            "domain_test": "memory://b/test.jsonl",
        },
        "final": {"tasks": "memory://b/tasks.jsonl", "budget": "4e2", "methods": ["random"], "seeds": [0]},
        "landscape": {"seq_len": 24, "batch_size": 8},
        "train": {"seq_len": 24, "batch_size": 8},
        "grid": {"design": {"budgets": ["1e2", "4e2", "1.6e3"], "n": 4, "centre": 1}, "rounds": 0},
        "fit": {
            "moments": "logppl",
            "law": "mu",
            "method": "point",
            "bootstrap": 0,
            "starts": 4,
            "min_runs_per_param": 1,
        },
    }


def _upload_study_inputs(train_files):
    d, texts, _ = train_files
    upload_tree(d / "base", "memory://b/base")
    for name in ("train.jsonl", "test.jsonl"):
        as_path(f"memory://b/{name}").write_bytes((d / name).read_bytes())
    as_path("memory://b/valid.jsonl").write_bytes((d / "test.jsonl").read_bytes())  # mechanics only
    words = [t.split() for t in texts if len(t.split()) >= 10]  # whole words: a cut word may merge away
    tasks = [
        {"question": " ".join(w[:5]), "choices": [" ".join(w[5:10]), " ".join(words[i + 1][5:10])], "answer": 0}
        for i, w in enumerate(words[:6])
    ]
    as_path("memory://b/tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))


def test_run_a_study_on_memory_until_the_landscape_and_force_it(train_files, tmp_path):
    """`pplaw run` with out_dir memory:// (the cheap part): the study's records and the landscape on
    the store, commands that name URLs, a cached rerun, and `--force` moving the stage aside on
    the store (copy, then delete: there is no rename)."""
    import yaml

    _upload_study_inputs(train_files)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(_study_tree(train_files, "memory://b/study")))
    assert main(["run", str(config), "--until", "landscape"]) == 0
    log = as_path("memory://b/study/commands.log").read_text().splitlines()
    assert len(log) == 1 and log[0].startswith(
        "pplaw score --model memory://b/base --data memory://b/train.jsonl --out memory://b/study/landscape "
    )
    for done in ("landscape/summary.json", "config.yaml", "stages.json"):
        assert as_path(f"memory://b/study/{done}").is_file(), done
    rows = _rows("memory://b/study/landscape")
    assert main(["run", str(config), "--until", "landscape"]) == 0
    assert len(as_path("memory://b/study/commands.log").read_text().splitlines()) == 1  # nothing re-run
    assert main(["run", str(config), "--until", "landscape", "--force", "landscape"]) == 0
    assert len(as_path("memory://b/study/commands.log").read_text().splitlines()) == 2
    moved = [p for p in as_path("memory://b/study/superseded").iterdir()]
    assert len(moved) == 1 and moved[0].name.startswith("landscape-")
    pd.testing.assert_frame_equal(_rows(moved[0]), rows)
    pd.testing.assert_frame_equal(_rows("memory://b/study/landscape"), rows)
    assert not Path("memory:").exists()  # nothing written to a local path spelled like the URL


@pytest.mark.slow
def test_run_a_study_on_memory_until_the_fit(train_files, tmp_path):
    """`pplaw run` with out_dir memory://: every command names URLs (there is no working directory
    in a bucket), every stage's completion file is on the store, a rerun issues no command."""
    import yaml

    _upload_study_inputs(train_files)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(_study_tree(train_files, "memory://b/study")))
    assert main(["run", str(config), "--until", "fit"]) == 0
    log = as_path("memory://b/study/commands.log").read_text().splitlines()
    assert [line.split()[1] for line in log] == ["score", "select", *["train"] * 4, "runs", "runs", "fit"]
    assert all("--out memory://b/study/" in line for line in log)
    for done in (
        "landscape/summary.json",
        "grid/selections/design.json",
        "grid/runs.csv",
        "fit/fit.json",
        "config.yaml",
        "stages.json",
    ):
        assert as_path(f"memory://b/study/{done}").is_file(), done
    runs = pd.read_csv("memory://b/study/grid/runs.csv")
    assert len(runs) == 4 and runs.loss.notna().all()
    assert main(["run", str(config), "--until", "fit"]) == 0
    assert len(as_path("memory://b/study/commands.log").read_text().splitlines()) == len(log)
    assert not Path("memory:").exists()  # nothing written to a local path spelled like the URL


@pytest.mark.slow
def test_run_a_whole_study_on_memory_with_its_report(train_files, tmp_path):
    import yaml

    _upload_study_inputs(train_files)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(_study_tree(train_files, "memory://b/study")))
    assert main(["run", str(config)]) == 0
    report = as_path("memory://b/study/report.md").read_text()
    assert "## Final CPT runs" in report and as_path("memory://b/study/report_figures/landscape.png").is_file()
    assert as_path("memory://b/study/final/random/seed0/eval.json").is_file()
    assert as_path("memory://b/study/final/random/seed0/downstream.json").is_file()
    # a changed fit supersedes fit and what follows: moved aside on the store (copy, then delete)
    assert main(["run", str(config), "fit.starts=8"]) == 0
    assert any(p.name.startswith("fit-") for p in as_path("memory://b/study/superseded").iterdir())
