"""`pplaw score` as a real 2-process JAX job on CPU: the hosts split the corpus, no row lost or doubled.

Two `python -m pplaw_jax.cli score` processes are started with the environment a multi-host
launcher sets (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`), so
`initialize_distributed()` calls `jax.distributed.initialize()` and each process sees
`jax.process_count() == 2` and 2 local CPU devices (4 global). Their combined output must equal the
rows of an ordinary single-process run on the same corpus.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_hf import WORDS, save_tiny_llama

from pplaw_jax.cli import main
from pplaw_jax.landscape.directory import iter_done_parts, read_json, read_parts

REPO = Path(__file__).resolve().parents[1]
KEY = ["doc_id", "chunk"]
# Words per document: empty ones (skipped), one-chunk ones and ones spanning several chunks of
# seq_len 24, so hosts get different numbers of rows and batches.
DOC_WORDS = [0, 3, 60, 17, 150, 1, 45, 90, 0, 33, 8, 120, 5, 0, 70, 12, 2, 41, 99, 6, 0, 27, 64]
N_HOSTS = 2
DEVICES_PER_HOST = 2
TIMEOUT_S = 180  # a normal run takes ~30 s; a failed host hangs 300 s in JAX's shutdown barrier


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A random 2-layer HF Llama with a byte-level BPE tokenizer, and a 23-document JSONL corpus."""
    root = tmp_path_factory.mktemp("multihost")
    save_tiny_llama(root / "model", seed=1)

    rng = np.random.default_rng(7)
    docs = [{"id": f"d{i:02d}", "text": " ".join(rng.choice(WORDS, size=n))} for i, n in enumerate(DOC_WORDS)]
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return root / "model", corpus, docs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sorted_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(KEY).reset_index(drop=True)


def launch_hosts(args: list[str], logs: Path) -> list[tuple[subprocess.Popen, Path]]:
    """Start one `pplaw score` process per host, as a multi-host launcher would."""
    port = free_port()
    procs = []
    for h in range(N_HOSTS):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES_PER_HOST}",
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": str(N_HOSTS),
            "JAX_PROCESS_ID": str(h),
        }
        log = logs / f"host{h}.log"
        with open(log, "wb") as f:
            procs.append(
                (
                    subprocess.Popen(
                        [sys.executable, "-m", "pplaw_jax.cli", "score", *args],
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=str(logs),
                    ),
                    log,
                )
            )
    return procs


def wait_all(procs: list[tuple[subprocess.Popen, Path]]) -> None:
    """Wait for every host to exit 0; fail at the first non-zero exit or after TIMEOUT_S, with
    the logs. Kills what is left."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while any(proc.poll() is None for proc, _ in procs):
            for proc, log in procs:
                rc = proc.poll()
                assert rc in (None, 0), f"{log.name} exited {rc}:\n{log.read_text()[-4000:]}"
            if time.monotonic() > deadline:  # e.g. a host failed and hangs in JAX's shutdown barrier
                running = [log.name for proc, log in procs if proc.poll() is None]
                logs = "".join(f"\n--- {log.name}:\n{log.read_text()[-3000:]}" for _, log in procs)
                pytest.fail(f"{running} still running after {TIMEOUT_S}s{logs}")
            time.sleep(0.2)
        for proc, log in procs:
            assert proc.returncode == 0, f"{log.name} exited {proc.returncode}:\n{log.read_text()[-4000:]}"
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_two_process_score_splits_the_corpus_exactly(tiny_setup, tmp_path):
    model_dir, corpus, docs = tiny_setup
    common = ["--model", str(model_dir), "--data", str(corpus), "--seq-len", "24", "--docs-per-part", "3"]

    # reference: one ordinary process on this test process's 8 fake devices
    assert main(["score", *common, "--out", str(tmp_path / "one")]) == 0
    single = sorted_rows(read_parts(tmp_path / "one"))

    out = tmp_path / "two"
    wait_all(launch_hosts([*common, "--out", str(out), "--batch-size", "4"], tmp_path))

    # the processes really formed one 2-process JAX job with 2 local devices each
    summary = json.loads((out / "summary.json").read_text())
    assert summary["process_count"] == N_HOSTS and summary["devices_per_host"] == DEVICES_PER_HOST
    assert summary["mesh"] == {"data": DEVICES_PER_HOST, "fsdp": 1, "tensor": 1}
    host0_stdout = (tmp_path / "host0.log").read_text().strip().splitlines()
    assert json.loads(host0_stdout[-1])["documents"] == len(docs)  # only process 0 reports

    # both hosts wrote several parts; each host's rows are exactly its modulo shard of the corpus
    done = list(iter_done_parts(out))
    assert {h for h, _, _ in done} == set(range(N_HOSTS))
    scored_ids = set(single.doc_id)
    for h in range(N_HOSTS):
        host_rows = pd.concat([pd.read_parquet(p) for host, _, p in done if host == h])
        shard = [d["id"] for i, d in enumerate(docs) if i % N_HOSTS == h]
        assert set(host_rows.doc_id) == set(shard) & scored_ids
        assert read_json(out / "parts" / f"host{h:03d}.done")["docs"] == len(shard)
        assert sum(host == h for host, _, _ in done) == -(-len(shard) // 3)  # ceil(docs / docs_per_part)

    # the union of the hosts' rows is the single-process landscape: nothing lost, nothing doubled
    both = read_parts(out)
    assert not both.duplicated(KEY).any()
    both = sorted_rows(both)
    assert both[KEY + ["n_tokens"]].equals(single[KEY + ["n_tokens"]])
    np.testing.assert_allclose(both.sum_nll, single.sum_nll, rtol=1e-5)
    assert single.sum_nll.std() > 1.0  # the rows really differ, so a mix-up would show
    assert (single.groupby("doc_id").chunk.max() > 0).any()  # some documents span several chunks
    assert not list((out / "parts").glob("*.tmp"))

    # summary.json covers the whole corpus
    n_empty = sum(not d["text"] for d in docs)
    assert (summary["documents"], summary["skipped"], summary["chunks"]) == (len(docs), n_empty, len(single))
    assert n_empty > 0 and summary["tokens"] == single.n_tokens.sum()
    assert summary["parts"] == len(done)


LOAD_WORKER = r"""
import json, sys
import numpy as np
from pplaw_jax.distributed import initialize_distributed
initialize_distributed()
import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from pplaw_jax.distributed import make_mesh
from pplaw_jax.models import hf, load_model

read_bytes = 0
original = hf.SafetensorsSource.read
def counting_read(self, index):  # every byte this host takes from the checkpoint
    global read_bytes
    out = original(self, index)
    read_bytes += out.nbytes
    return out
hf.SafetensorsSource.read = counting_read

model_dir, ids, scan = sys.argv[1], np.asarray(json.loads(sys.argv[2]), np.int32), sys.argv[3] == "1"
mesh = make_mesh("data=1,fsdp=2,tensor=2")  # fsdp splits across the hosts, tensor within each
model = load_model(model_dir, mesh=mesh, scan_layers=scan).model
share = total = 0
for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    array = var.get_value()
    total += array.nbytes
    # the distinct slices this host's devices hold (replicas on two of its devices count once)
    slices = {tuple(s.indices(n)[:2] for s, n in zip(sh.index, array.shape)) for sh in array.addressable_shards}
    share += sum(int(np.prod([b - a for a, b in sl])) * array.dtype.itemsize for sl in slices)
replicated = NamedSharding(mesh, P())
graphdef, state = nnx.split(model)
forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x), out_shardings=replicated)
logits = forward(state, jax.make_array_from_callback(ids.shape, replicated, lambda i: ids[i]))
print(json.dumps({"read_bytes": read_bytes, "share_bytes": share, "total_bytes": total,
                  "process_count": jax.process_count(), "logits": np.asarray(logits.addressable_data(0)).tolist()}))
"""


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_two_hosts_each_read_only_their_shards_of_a_checkpoint(tiny_setup, tmp_path, scan):
    """Loading onto a mesh whose fsdp axis spans two processes: each host reads exactly the
    distinct slices its own devices hold (about half the checkpoint), and the model computes the
    logits of PyTorch on both hosts."""
    import torch
    import transformers

    model_dir, _, _ = tiny_setup
    ids = np.random.default_rng(0).integers(0, 300, (2, 10)).tolist()
    port = free_port()
    procs = []
    for h in range(N_HOSTS):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES_PER_HOST}",
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": str(N_HOSTS),
            "JAX_PROCESS_ID": str(h),
        }
        log = tmp_path / f"load{h}.log"
        with open(log, "wb") as f:
            procs.append(
                (
                    subprocess.Popen(
                        [sys.executable, "-c", LOAD_WORKER, str(model_dir), json.dumps(ids), "1" if scan else "0"],
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=str(tmp_path),
                    ),
                    log,
                )
            )
    wait_all(procs)
    results = [json.loads(log.read_text().strip().splitlines()[-1]) for _, log in procs]

    ref = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        expected = ref(torch.tensor(ids)).logits.numpy()
    for h, r in enumerate(results):
        print(
            f"host {h}: read {r['read_bytes']} B of the checkpoint's {r['total_bytes']} B "
            f"(its share {r['share_bytes']} B)"
        )
        assert r["process_count"] == N_HOSTS
        assert r["read_bytes"] == r["share_bytes"] < 0.6 * r["total_bytes"]
        np.testing.assert_allclose(np.asarray(r["logits"]), expected, atol=1e-4, rtol=0)
