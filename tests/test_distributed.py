"""Mesh construction, logical axis rules, sharded forward == 1-device forward, multi-host init."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from pplaw_jax import distributed
from pplaw_jax.distributed import (
    batch_sharding,
    logical_partition_spec,
    make_mesh,
    model_shardings,
    parse_mesh_spec,
    shard_model,
    state_shardings,
)
from pplaw_jax.errors import PplawError
from pplaw_jax.models import ModelConfig, init_model


def test_parse_mesh_spec():
    assert parse_mesh_spec("data=-1,fsdp=1,tensor=1") == {"data": -1, "fsdp": 1, "tensor": 1}
    assert parse_mesh_spec("fsdp=4") == {"data": 1, "fsdp": 4, "tensor": 1}
    for bad, why in [
        ("data=2,model=2", "model"),
        ("data=x", "not an integer"),
        ("data=-1,fsdp=-1", "at most one"),
        ("data=0", "positive"),
        ("data=2,data=2", "twice"),
    ]:
        with pytest.raises(PplawError, match=why):
            parse_mesh_spec(bad)


def test_make_mesh_sizes():
    assert len(jax.devices()) == 8  # conftest's fake CPU devices
    assert dict(make_mesh().shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert dict(make_mesh("data=-1,tensor=2").shape) == {"data": 4, "fsdp": 1, "tensor": 2}
    mesh = make_mesh({"data": 1, "fsdp": 2, "tensor": 1}, devices=jax.devices()[:2])
    assert mesh.axis_names == ("data", "fsdp", "tensor") and mesh.devices.size == 2
    with pytest.raises(PplawError, match="do not divide"):
        make_mesh("data=-1,tensor=3")
    with pytest.raises(PplawError, match="needs 4 devices but 8"):
        make_mesh("data=2,fsdp=2,tensor=1")


def test_logical_axis_rules():
    """The rules table places each logical axis as the Megatron/FSDP layout needs."""
    spec = logical_partition_spec
    assert spec(("embed", "heads"), (64, 64)) == P("fsdp", "tensor")  # q_proj: column-parallel
    assert spec(("kv_heads",), (32,)) == P("tensor")  # k_proj bias
    assert spec(("heads", "embed"), (64, 64)) == P("tensor", "fsdp")  # o_proj: row-parallel
    assert spec(("embed", "mlp"), (64, 128)) == P("fsdp", "tensor")
    assert spec(("mlp", "embed"), (128, 64)) == P("tensor", "fsdp")
    assert spec(("vocab", "embed"), (1000, 64)) == P("tensor", "fsdp")  # vocab-parallel embedding
    assert spec(("embed", "vocab"), (64, 1000)) == P("fsdp", "tensor")
    assert spec(("norm",), (64,)) == P() and spec(("embed_bias",), (64,)) == P() and spec(("head_dim",), (8,)) == P()
    assert spec(("layers", "embed", "mlp"), (4, 64, 128)) == P(None, "fsdp", "tensor")  # a scanned stack
    assert spec(("embed", "embed"), (64, 64)) == P("fsdp")  # a mesh axis is used once per parameter

    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    # a dim the axis size does not divide (301 by tensor=2, 3 by tensor=2) falls back to replication
    assert spec(("vocab", "embed"), (301, 64), mesh) == P(None, "fsdp")
    assert spec(("embed", "kv_heads"), (64, 3), mesh) == P("fsdp")
    assert spec(("embed", "mlp"), (64, 128), make_mesh("data=8")) == P()
    with pytest.raises(PplawError, match="logical axis 'experts' has no rule"):
        spec(("experts", "embed"), (4, 64))


def test_model_parameters_are_placed_by_their_logical_axes():
    """Every parameter of both layouts carries logical axes; state_shardings follows them, and
    optimizer moments (copies of the parameter variables) get the same shardings."""
    import optax

    config = ModelConfig(256, 32, 64, 2, 4, 2, 8, attention_bias=True, qk_norm=True, model_type="qwen3")
    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    for scan in (False, True):
        model = init_model(config, scan_layers=scan)
        params = nnx.state(model, nnx.Param)
        for path, var in nnx.to_flat_state(params):
            assert len(distributed.logical_axes(var)) == var.ndim, path
        shardings = {
            ".".join(map(str, p)): v.get_value().spec for p, v in nnx.to_flat_state(state_shardings(params, mesh))
        }
        layer = "layers." if scan else "layers.1."
        lead = (None,) if scan else ()
        assert shardings[layer + "self_attn.q_proj.kernel"] == P(*lead, "fsdp", "tensor")
        assert shardings[layer + "self_attn.o_proj.kernel"] == P(*lead, "tensor", "fsdp")
        assert shardings[layer + "self_attn.k_proj.bias"] == P(*lead, "tensor")
        assert shardings[layer + "self_attn.o_proj.bias"] == P()
        assert shardings[layer + "mlp.down_proj.kernel"] == P(*lead, "tensor", "fsdp")
        assert shardings[layer + "self_attn.q_norm.scale"] == P()
        assert shardings["embed_tokens.embedding"] == P("tensor", "fsdp")
        assert shardings["lm_head.kernel"] == P("fsdp", "tensor")
        opt_state = optax.adam(1e-3).init(params)
        moments = state_shardings(opt_state, mesh)
        mu = {".".join(map(str, p)): v.get_value().spec for p, v in nnx.to_flat_state(moments[0].mu)}
        assert mu == shardings
        assert moments[0].count.spec == P()  # a leaf without logical axes is replicated


def test_batch_sharding():
    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    assert batch_sharding(mesh).spec == P(("data", "fsdp"), None)


@pytest.mark.parametrize("tied,scan", [(False, False), (True, False), (False, True)])
def test_sharded_forward_equals_single_device(tied, scan):
    config = ModelConfig(256, 32, 64, 2, 4, 2, 8, tie_word_embeddings=tied, attention_bias=True)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 12)), jnp.int32)

    single = init_model(config, seed=3, scan_layers=scan)
    shard_model(single, make_mesh("data=1", devices=jax.devices()[:1]))
    expected = np.asarray(single(ids))

    model = init_model(config, seed=3, scan_layers=scan)
    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    shard_model(model, mesh)
    q = model.layers.self_attn.q_proj.kernel[...] if scan else model.layers[0].self_attn.q_proj.kernel[...]
    assert q.sharding.spec == (P(None, "fsdp", "tensor") if scan else P("fsdp", "tensor"))
    assert q.addressable_shards[0].data.shape[-2:] == (16, 16)  # really split over 2 x 2 devices

    graphdef, state = nnx.split(model)
    forward = jax.jit(
        lambda s, x: nnx.merge(graphdef, s)(x),
        in_shardings=(model_shardings(model, mesh), batch_sharding(mesh)),
    )
    logits = forward(state, jax.device_put(ids, batch_sharding(mesh)))
    assert len(logits.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(logits), expected, atol=2e-5, rtol=0)


def test_initialize_distributed(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(distributed.jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed, "_initialized", False)
    for var in (
        "JAX_COORDINATOR_ADDRESS",
        "JAX_NUM_PROCESSES",
        "JAX_PROCESS_ID",
        "SLURM_NTASKS",
        "SLURM_JOB_ID",
        "TPU_WORKER_HOSTNAMES",
        "CLOUD_TPU_TASK_HOSTNAMES",
    ):
        monkeypatch.delenv(var, raising=False)

    distributed.initialize_distributed()  # single process: nothing
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    distributed.initialize_distributed()  # one SLURM task: nothing
    assert calls == []

    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    distributed.initialize_distributed()
    distributed.initialize_distributed()  # idempotent
    assert calls == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}]

    monkeypatch.setattr(distributed, "_initialized", False)
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    distributed.initialize_distributed()  # SLURM: JAX's cluster detection supplies the rest
    assert calls[-1] == {}


def test_compilation_cache_directory_from_the_environment(tmp_path):
    """`PPLAW_COMPILATION_CACHE` sends XLA executables to a directory a later process reuses
    (`pplaw run` defaults it to OUT/.jax_cache); `off` disables it. A fresh interpreter each time:
    the cache can only be configured before a process's first compilation."""
    import subprocess
    import sys

    script = (
        "import jax, jax.numpy as jnp\n"
        "from pplaw_jax.distributed import configure_compilation_cache\n"
        f"print(configure_compilation_cache({str(tmp_path / 'default')!r}))\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
        "jax.jit(lambda x: jnp.sin(x) @ x)(jnp.ones((8, 8))).block_until_ready()\n"
    )

    def run(value):
        env = {k: v for k, v in os.environ.items() if k != "PPLAW_COMPILATION_CACHE"}
        if value is not None:
            env["PPLAW_COMPILATION_CACHE"] = value
        return subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    assert run(str(tmp_path / "env")) == str(tmp_path / "env")
    assert any(p.name.startswith("jit_") for p in (tmp_path / "env").iterdir())
    assert run(None) == str(tmp_path / "default") and any((tmp_path / "default").iterdir())
    assert run("off") == "None"


def test_a_command_run_by_pplaw_run_keeps_the_study_compilation_cache(tmp_path):
    """A compiling command run alone sets the per-user cache; run by `pplaw run` (in its process,
    after the study set OUT/.jax_cache), it keeps the study's: its compilations go there."""
    import subprocess
    import sys

    script = (
        "import jax, jax.numpy as jnp\n"
        "from pplaw_jax.cli import main\n"
        "from pplaw_jax.distributed import configure_compilation_cache\n"
        f"configure_compilation_cache({str(tmp_path / 'study')!r})\n"
        f"code = main(['fit', '--runs', {str(tmp_path / 'missing.csv')!r}, '--out', {str(tmp_path / 'fit')!r}])\n"
        "jax.jit(lambda x: jnp.cos(x) @ x)(jnp.ones((8, 8))).block_until_ready()\n"
        "print(code, jax.config.values['jax_compilation_cache_dir'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PPLAW_COMPILATION_CACHE"}
    env["PPLAW_CACHE"] = str(tmp_path / "user")  # where a per-user cache would go
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", str(tmp_path / "study")]
    assert any(p.name.startswith("jit_") for p in (tmp_path / "study").iterdir())
