"""The launchers in `launch/` exercised: what they run, with which environment, on which hosts.

- `multinode_gpu.sh`: two real local processes (CPU, `jax.distributed` over localhost) started by
  the launcher run `pplaw score`; each document is scored once, by host `i % 2`, and the rows equal
  a one-process run's.
- `slurm_gpu.sbatch`: run under stand-ins for `scontrol` and `srun` (one task per node, like
  `--ntasks-per-node=1`); the environment it gives each task makes
  `pplaw_jax.distributed.initialize_distributed()` form one 2-process JAX job with the first node
  as coordinator and `SLURM_PROCID` as the process id.
- `tpu_pod.sh --dry-run`: the gcloud commands it prints for create, setup, run and delete (zone and
  project, `--worker=all`, the remote command's arguments passed through unchanged, gs:// globs
  included), and that nothing is executed.
"""

from __future__ import annotations

import json
import os
import shlex
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
from pplaw_jax.landscape.directory import iter_done_parts, read_parts

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
# The environment holding this interpreter: the launchers' PPLAW_VENV, with the command named by
# the interpreter's own file name (`.venv/bin/python` -> "python").
VENV = Path(sys.executable).parent.parent
PYTHON = Path(sys.executable).name
KEY = ["doc_id", "chunk"]
TIMEOUT_S = 180  # a normal run takes ~20 s; a failed host can hang in JAX's shutdown barrier


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_env(**extra: str) -> dict[str, str]:
    """This environment with JAX on CPU and the repository importable (as the tests run it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_"))}
    return {**env, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", **extra}


def wait_all(procs: list[tuple[subprocess.Popen, Path]]) -> None:
    """Wait for every process to exit 0; fail with the logs at the first non-zero exit or after
    TIMEOUT_S. Kills what is left."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while any(p.poll() is None for p, _ in procs):
            for p, log in procs:
                assert p.poll() in (None, 0), f"{log.name} exited {p.returncode}:\n{log.read_text()[-4000:]}"
            if time.monotonic() > deadline:
                logs = "".join(f"\n--- {log.name}:\n{log.read_text()[-3000:]}" for _, log in procs)
                pytest.fail(f"still running after {TIMEOUT_S}s{logs}")
            time.sleep(0.2)
        for p, log in procs:
            assert p.returncode == 0, f"{log.name} exited {p.returncode}:\n{log.read_text()[-4000:]}"
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_launchers_parse():
    for script in ("multinode_gpu.sh", "slurm_gpu.sbatch", "tpu_pod.sh"):
        result = subprocess.run(["bash", "-n", str(LAUNCH / script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


# ---------------------------------------------------------------------------------- multinode_gpu.sh
# Words per document: empty ones (skipped), one-chunk ones and ones spanning several chunks.
DOC_WORDS = [0, 3, 60, 17, 150, 1, 45, 0, 33, 8, 120, 5, 70]


def test_multinode_launcher_two_processes_score_like_one(tmp_path):
    save_tiny_llama(tmp_path / "model", seed=3)
    rng = np.random.default_rng(11)
    docs = [{"id": f"d{i:02d}", "text": " ".join(rng.choice(WORDS, size=n))} for i, n in enumerate(DOC_WORDS)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    common = ["--model", str(tmp_path / "model"), "--data", str(corpus), "--seq-len", "24", "--docs-per-part", "4"]

    out = tmp_path / "two"
    port = free_port()
    procs = []
    for rank in range(2):
        env = cpu_env(COORDINATOR=f"127.0.0.1:{port}", NUM_NODES="2", NODE_RANK=str(rank), PPLAW_VENV=str(VENV),
                      XLA_FLAGS="--xla_force_host_platform_device_count=1")  # fmt: skip
        log = tmp_path / f"node{rank}.log"
        with open(log, "wb") as f:
            cmd = ["bash", str(LAUNCH / "multinode_gpu.sh"), PYTHON, "-m", "pplaw_jax.cli", "score", *common,
                   "--out", str(out), "--batch-size", "2"]  # fmt: skip
            procs.append((subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=tmp_path), log))
    wait_all(procs)

    # reference: one ordinary process (this one, on its 8 fake devices)
    assert main(["score", *common, "--out", str(tmp_path / "one")]) == 0
    single = read_parts(tmp_path / "one").sort_values(KEY).reset_index(drop=True)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["process_count"] == 2  # the launcher's environment made one 2-process JAX job
    scored = set(single.doc_id)
    done = list(iter_done_parts(out))
    for host in (0, 1):
        rows = pd.concat([pd.read_parquet(p) for h, _, p in done if h == host])
        assert set(rows.doc_id) == {d["id"] for i, d in enumerate(docs) if i % 2 == host} & scored
    both = read_parts(out)
    assert not both.duplicated(KEY).any()  # each chunk scored once
    both = both.sort_values(KEY).reset_index(drop=True)
    assert both[KEY + ["n_tokens"]].equals(single[KEY + ["n_tokens"]])
    np.testing.assert_allclose(both.sum_nll, single.sum_nll, rtol=1e-5)
    assert single.sum_nll.std() > 1.0 and (single.groupby("doc_id").chunk.max() > 0).any()


@pytest.mark.parametrize("rank, nodes", [("2", "2"), ("-1", "2"), ("0", "0"), ("x", "2")])
def test_multinode_launcher_refuses_bad_rank(rank, nodes):
    env = cpu_env(COORDINATOR="127.0.0.1:1", NUM_NODES=nodes, NODE_RANK=rank, PPLAW_VENV="/nonexistent")
    result = subprocess.run(["bash", str(LAUNCH / "multinode_gpu.sh"), "pplaw", "score"], env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "NODE_RANK" in result.stderr


# ---------------------------------------------------------------------------------- slurm_gpu.sbatch
FAKE_SCONTROL = """#!/usr/bin/env bash
# stand-in for `scontrol show hostnames NODELIST`: one host per line, the first one local; the
# second line comes later, so a reader that stops after the first one makes this die of SIGPIPE
[[ "$1 $2" == "show hostnames" && "$3" == "$SLURM_JOB_NODELIST" ]] || { echo "unexpected: $*" >&2; exit 1; }
echo localhost
sleep 0.3
echo node-b
"""
FAKE_SRUN = """#!/usr/bin/env bash
# stand-in for srun with one task per node: runs the command SLURM_NNODES times, in parallel
while [[ "$1" == --* ]]; do echo "$1" >> "$FAKE_SLURM_DIR/srun_options"; shift; done
pids=()
for ((i = 0; i < SLURM_NNODES; i++)); do
  SLURM_PROCID=$i SLURM_NODEID=$i SLURM_LOCALID=0 SLURM_NTASKS=$SLURM_NNODES "$@" > "$FAKE_SLURM_DIR/task$i.out" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""
# Each task: what initialize_distributed() makes of the environment the sbatch script gave it.
PROBE = """
import json, os, jax
from pplaw_jax.distributed import initialize_distributed
initialize_distributed()
print(json.dumps({"env": {k: os.environ.get(k) for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                  "JAX_PROCESS_ID", "SLURM_PROCID")}, "cwd": os.getcwd(),
                  "process_index": jax.process_index(), "process_count": jax.process_count()}))
"""


def test_slurm_script_environment_forms_one_jax_job(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name, text in (("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN)):
        (fake_bin / name).write_text(text)
        (fake_bin / name).chmod(0o755)
    port = free_port()
    env = cpu_env(PATH=f"{fake_bin}:{os.environ['PATH']}", FAKE_SLURM_DIR=str(tmp_path), PPLAW_VENV=str(VENV),
                  SLURM_JOB_ID="42", SLURM_JOB_NODELIST="localhost,node-b", SLURM_NNODES="2",
                  SLURM_SUBMIT_DIR=str(REPO), JAX_COORDINATOR_PORT=str(port))  # fmt: skip
    result = subprocess.run(["bash", str(LAUNCH / "slurm_gpu.sbatch"), PYTHON, "-c", PROBE], env=env,
                            capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip
    logs = {i: (tmp_path / f"task{i}.out").read_text() for i in (0, 1) if (tmp_path / f"task{i}.out").exists()}
    assert result.returncode == 0, f"{result.stderr}\n{logs}"
    tasks = [json.loads(logs[i].strip().splitlines()[-1]) for i in (0, 1)]
    for i, task in enumerate(tasks):
        assert task["env"] == {"JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
                               "JAX_PROCESS_ID": str(i), "SLURM_PROCID": str(i)}  # fmt: skip
        assert (task["process_index"], task["process_count"]) == (i, 2)
        assert Path(task["cwd"]) == REPO  # the job runs from the submit directory
    assert (tmp_path / "srun_options").read_text().split() == ["--kill-on-bad-exit=1"]


# ---------------------------------------------------------------------------------- tpu_pod.sh
FAKE_GCLOUD = """#!/usr/bin/env bash
# stand-in for gcloud: logs every call; answers `config get-value project` with $FAKE_PROJECT
echo "$*" >> "$FAKE_GCLOUD_LOG"
[[ "$1 $2 $3" == "config get-value project" ]] && echo "${FAKE_PROJECT:-}"
exit 0
"""
TPU_ENV = {"TPU_NAME": "my-tpu", "ZONE": "europe-west4-b", "ACCELERATOR_TYPE": "v5p-16",
           "RUNTIME_VERSION": "v2-alpha-tpuv5", "PROJECT": "my-proj"}  # fmt: skip


@pytest.fixture
def tpu_pod(tmp_path):
    """Run `launch/tpu_pod.sh ARGS` with a logging stand-in for gcloud first on PATH; returns
    (completed process, the gcloud calls it made)."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "gcloud").write_text(FAKE_GCLOUD)
    (fake_bin / "gcloud").chmod(0o755)
    log = tmp_path / "gcloud.log"

    def run(*args: str, **env: str):
        log.write_text("")
        inherited = {k: v for k, v in os.environ.items() if k not in TPU_ENV}  # settings only from `env`
        full_env = {**inherited, "PATH": f"{fake_bin}:{os.environ['PATH']}", "FAKE_GCLOUD_LOG": str(log),
                    "TMPDIR": str(tmp_path), **env}  # fmt: skip
        result = subprocess.run(
            ["bash", str(LAUNCH / "tpu_pod.sh"), *args], env=full_env, capture_output=True, text=True
        )
        return result, log.read_text().splitlines()

    return run


def gcloud_tpu(line: list[str], verb: str) -> list[str]:
    """The arguments after `gcloud compute tpus tpu-vm VERB`, checking that prefix and that the
    zone and project flags are the configured ones (and come last)."""
    assert line[:5] == ["gcloud", "compute", "tpus", "tpu-vm", verb], line
    assert line[-2:] == ["--zone=europe-west4-b", "--project=my-proj"], line
    return line[5:-2]


def test_tpu_pod_dry_run_prints_every_command_and_runs_none(tpu_pod, tmp_path):
    result, calls = tpu_pod("--dry-run", "create", **TPU_ENV)
    assert result.returncode == 0, result.stderr
    (line,) = [shlex.split(x) for x in result.stdout.splitlines()]
    assert gcloud_tpu(line, "create") == ["my-tpu", "--accelerator-type=v5p-16", "--version=v2-alpha-tpuv5"]

    result, calls = tpu_pod("--dry-run", "setup", **TPU_ENV)
    assert result.returncode == 0, result.stderr
    tar, scp, ssh = [shlex.split(x) for x in result.stdout.splitlines()]
    archive = str(tmp_path / "pplaw_jax-my-tpu.tgz")
    assert tar == ["tar", "-C", str(REPO), "--exclude=.venv", "--exclude=.git", "-czf", archive, "."]
    assert not Path(archive).exists()  # printed, not run
    assert gcloud_tpu(scp, "scp") == [archive, "my-tpu:pplaw_jax.tgz", "--worker=all"]
    args = gcloud_tpu(ssh, "ssh")
    assert args[:2] == ["my-tpu", "--worker=all"] and args[2].startswith("--command=")
    install = args[2].removeprefix("--command=")
    assert "tar -C ~/pplaw_jax -xzf ~/pplaw_jax.tgz" in install
    assert shlex.split(install.split("&&")[-1]) == [".venv/bin/pip", "install", "-q", "-e", ".", "jax[tpu]", "gcsfs"]

    command = ["pplaw", "score", "--model", "gs://bucket/models/smollm2", "--data", "gs://bucket/med/*.jsonl.gz",
               "--out", "gs://bucket/landscape", "--note", "it's a \"test\" $HOME `x`", "--empty", "",
               "--mesh", "data=-1,fsdp=1,tensor=1"]  # fmt: skip
    result, calls = tpu_pod("--dry-run", "run", *command, **TPU_ENV)
    assert result.returncode == 0, result.stderr
    (line,) = [shlex.split(x) for x in result.stdout.splitlines()]
    args = gcloud_tpu(line, "ssh")
    assert args[:2] == ["my-tpu", "--worker=all"] and len(args) == 3
    remote = args[2].removeprefix("--command=")
    prefix = "cd ~/pplaw_jax && .venv/bin/"
    assert remote.startswith(prefix)
    assert shlex.split(remote.removeprefix(prefix)) == command  # every host gets the arguments unchanged
    assert "gs://bucket/med/*.jsonl.gz" in remote  # quoted, not expanded, by the remote shell

    result, calls = tpu_pod("--dry-run", "delete", **TPU_ENV)
    (line,) = [shlex.split(x) for x in result.stdout.splitlines()]
    assert gcloud_tpu(line, "delete") == ["my-tpu", "--quiet"]
    assert calls == []  # with PROJECT set, a dry run calls gcloud for nothing


def test_tpu_pod_without_dry_run_runs_the_commands(tpu_pod):
    result, calls = tpu_pod("run", "pplaw", "score", "--data", "gs://b/*.jsonl", **TPU_ENV)
    assert result.returncode == 0, result.stderr
    assert calls == ["compute tpus tpu-vm ssh my-tpu --worker=all --command=cd ~/pplaw_jax && .venv/bin/pplaw "
                     "score --data 'gs://b/*.jsonl' --zone=europe-west4-b --project=my-proj"]  # fmt: skip


def test_tpu_pod_project_and_arguments(tpu_pod):
    env = {k: v for k, v in TPU_ENV.items() if k != "PROJECT"}
    result, calls = tpu_pod("--dry-run", "delete", FAKE_PROJECT="from-gcloud", **env)
    assert result.returncode == 0 and result.stdout.split()[-1] == "--project=from-gcloud"
    assert calls == ["config get-value project"]

    result, _ = tpu_pod("--dry-run", "delete", **env)  # gcloud has no default project
    assert result.returncode == 2 and "set PROJECT" in result.stderr and not result.stdout

    for args in ([], ["--dry-run"], ["--dry-run", "bogus"], ["--dry-run", "run"]):
        result, calls = tpu_pod(*args, **TPU_ENV)
        assert result.returncode == 2 and not result.stdout and calls == [], args
        assert "tpu_pod.sh" in result.stderr
