"""Device mesh, parameter partition rules and multi-host initialisation.

The mesh has three axes (MaxText/Levanter style):
- `data`: pure data parallelism (parameters replicated),
- `fsdp`: data parallelism with parameters (and optimizer state) sharded, ZeRO-3 style,
- `tensor`: Megatron-style tensor parallelism inside attention and MLP blocks.
Batches are split over `data` x `fsdp`. Parameters carry logical axis names (`embed`, `mlp`,
`heads`, ...) mapped to mesh axes by `LOGICAL_AXIS_RULES`; XLA (GSPMD) inserts the collectives,
so any rule set is numerically correct and the rules only decide speed and memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pplaw_jax.config import DEFAULT_MESH
from pplaw_jax.errors import PplawError
from pplaw_jax.logs import get_logger

MESH_AXES = ("data", "fsdp", "tensor")
log = get_logger("distributed")

_initialized = False


# ---------------------------------------------------------------------- multi-host
def _is_multiprocess_launch() -> bool:
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS") or int(env.get("JAX_NUM_PROCESSES", "1") or 1) > 1:
        return True
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in env:
        return True
    # Cloud TPU pods: more than one worker host listed.
    hosts = env.get("TPU_WORKER_HOSTNAMES") or env.get("CLOUD_TPU_TASK_HOSTNAMES") or ""
    return len([h for h in hosts.split(",") if h]) > 1


def initialize_distributed() -> None:
    """Call `jax.distributed.initialize()` when launched as several processes; otherwise do nothing.

    Multi-process launches are recognised from `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` >
    1, SLURM with more than one task, or a TPU pod with several worker hosts; JAX reads the
    coordinator, process count and id from the same environment. Safe to call more than once.
    """
    global _initialized
    if _initialized or not _is_multiprocess_launch():
        return
    if jax.distributed.is_initialized():
        _initialized = True
        return
    kwargs: dict[str, Any] = {}
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        kwargs["coordinator_address"] = os.environ["JAX_COORDINATOR_ADDRESS"]
    if os.environ.get("JAX_NUM_PROCESSES"):
        kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
    if os.environ.get("JAX_PROCESS_ID"):
        kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)
    _initialized = True


# ---------------------------------------------------------------------- mesh
COMPILATION_CACHE_ENV = "PPLAW_COMPILATION_CACHE"


def configure_compilation_cache(default: str | os.PathLike | None = None) -> str | None:
    """Keep XLA's compiled executables in a directory (JAX's persistent compilation cache), so a
    later process compiling the same function (the next CPT run of a study, a resumed command)
    loads it instead of compiling. ``$PPLAW_COMPILATION_CACHE`` overrides `default`; ``off``
    disables. Every compilation is stored, not only those over JAX's default 1 s (the small ones
    add up: NumPyro's op-by-op NUTS set-up was some 260). Call before the first compilation of the
    process. Returns the directory in use, or None."""
    value = os.environ.get(COMPILATION_CACHE_ENV) or (os.fspath(default) if default is not None else None)
    if not value or value == "off":
        return None
    jax.config.update("jax_compilation_cache_dir", value)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return value


def parse_mesh_spec(spec: str) -> dict[str, int]:
    """ "data=-1,fsdp=1,tensor=1" -> {"data": -1, "fsdp": 1, "tensor": 1}; omitted axes are 1."""
    sizes = {axis: 1 for axis in MESH_AXES}
    seen = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in MESH_AXES:
            raise PplawError(f"mesh spec {spec!r}: {part!r} is not AXIS=SIZE with AXIS in {MESH_AXES}")
        if name in seen:
            raise PplawError(f"mesh spec {spec!r}: axis {name!r} given twice")
        seen.add(name)
        try:
            size = int(value)
        except ValueError:
            raise PplawError(f"mesh spec {spec!r}: size {value!r} of {name!r} is not an integer") from None
        if size == 0 or size < -1:
            raise PplawError(f"mesh spec {spec!r}: size of {name!r} must be positive or -1")
        sizes[name] = size
    if sum(v == -1 for v in sizes.values()) > 1:
        raise PplawError(f"mesh spec {spec!r}: at most one axis may be -1")
    return sizes


def make_mesh(spec: str | Mapping[str, int] = DEFAULT_MESH, devices: Sequence | None = None) -> Mesh:
    """A Mesh with axes ("data", "fsdp", "tensor") over `devices` (default: all devices).

    One axis may be -1 and takes the remaining devices; PplawError when the sizes do not
    multiply to the device count.
    """
    sizes = parse_mesh_spec(spec) if isinstance(spec, str) else {a: 1 for a in MESH_AXES} | dict(spec)
    if set(sizes) != set(MESH_AXES):
        raise PplawError(f"mesh axes must be {MESH_AXES}, got {sorted(sizes)}")
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    known = math.prod(v for v in sizes.values() if v != -1)
    if any(v == -1 for v in sizes.values()):
        if n % known:
            raise PplawError(f"mesh {sizes}: fixed axes ({known} devices) do not divide the {n} devices")
        sizes = {a: (n // known if v == -1 else v) for a, v in sizes.items()}
    if math.prod(sizes.values()) != n:
        raise PplawError(f"mesh {sizes} needs {math.prod(sizes.values())} devices but {n} are available")
    shape = tuple(sizes[a] for a in MESH_AXES)
    try:  # topology-aware device order on TPU/GPU slices
        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError) as e:
        # e.g. a subset of a slice, or a shape the topology cannot tile: correct, maybe slower
        if devices[0].platform != "cpu":
            log.warning(
                f"mesh {sizes}: no topology-aware device order ({e}); using the devices in "
                f"listed order, which may put a mesh axis across slow links"
            )
        grid = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(grid, MESH_AXES)  # Auto axis types: GSPMD propagates shardings through the model


def make_host_mesh(spec: str = DEFAULT_MESH) -> Mesh:
    """The mesh of this host's devices for work each host does alone (scoring its own documents).

    `spec` means what it means everywhere, a mesh over all hosts' devices; this host takes its
    share of the `data` axis, so `fsdp` and `tensor` must fit inside one host. With one host this
    is `make_mesh(spec)`.
    """
    hosts, local = jax.process_count(), jax.local_device_count()
    sizes = parse_mesh_spec(spec)
    fixed = math.prod(v for v in sizes.values() if v != -1)
    total = hosts * local
    if sizes["data"] == -1 and total % fixed == 0:
        sizes["data"] = total // fixed
    if sizes["data"] % hosts or sizes["fsdp"] * sizes["tensor"] > local:
        raise PplawError(
            f"mesh {spec!r} cannot be split into {hosts} per-host meshes of {local} devices "
            f"(the data axis must be a multiple of the host count, fsdp x tensor at most "
            f"one host's devices)"
        )
    per_host = dict(sizes, data=sizes["data"] // hosts) if sizes["data"] != -1 else sizes
    return make_mesh(per_host, devices=jax.local_devices())


# ---------------------------------------------------------------------- partition rules
# Every parameter names its dims with logical axes (`pplaw_jax.models.llama` records them as the
# NNX `out_sharding` metadata); this table maps each logical axis to a mesh axis (None: replicated).
# Kernels are [in, out]: column-parallel projections (q/k/v/gate/up) shard `out` over tensor,
# row-parallel ones (o/down) shard `in`; the embedding is vocab-parallel; the model width of every
# matrix goes to fsdp. Vectors over the width (norm scales, the attention output bias) and a scanned
# model's stacked `layers` axis are replicated: sharding them saves little and costs a gather.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),  # query heads x head_dim, fused (q_proj out, o_proj in)
    ("kv_heads", "tensor"),  # key/value heads x head_dim, fused (k_proj, v_proj out)
    ("head_dim", None),  # per-head q/k norm scales
    ("norm", None),  # RMSNorm scales over the model width
    ("embed_bias", None),  # o_proj bias over the model width
    ("layers", None),  # the stacked axis of scanned decoder layers
)


def logical_partition_spec(
    axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh | None = None, rules=LOGICAL_AXIS_RULES
) -> P:
    """PartitionSpec for a parameter of `shape` whose dims are named `axes` (logical names), by `rules`.

    A mesh axis is used once per parameter (a later dim mapped to an axis already taken is
    replicated). With `mesh`, a dim whose size the axis does not divide (or an axis of size 1) is
    replicated. PplawError for a logical name `rules` does not know.
    """
    table = dict(rules)
    if len(axes) != len(shape):
        raise PplawError(f"logical axes {tuple(axes)} do not match a parameter of shape {tuple(shape)}")
    spec: list[str | None] = []
    for name, dim in zip(axes, shape):
        if name is not None and name not in table:
            raise PplawError(f"logical axis {name!r} has no rule (known: {sorted(table)})")
        axis = None if name is None else table[name]
        if axis in spec or (
            mesh is not None and axis is not None and (mesh.shape[axis] == 1 or dim % mesh.shape[axis])
        ):
            axis = None
        spec.append(axis)
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def logical_axes(variable) -> tuple[str | None, ...] | None:
    """The logical axis names an NNX variable carries (its `out_sharding` metadata), or None."""
    if not isinstance(variable, nnx.Variable):
        return None
    axes = variable.get_metadata().get("out_sharding")
    return tuple(axes) if axes else None


def state_shardings(state, mesh: Mesh):
    """NamedSharding pytree for a parameter pytree: an `nnx.State`, or e.g. optimizer state whose
    moments are copies of the parameters' `nnx.Variable`s (so they carry the same logical axes).

    Each variable is placed by `logical_partition_spec` of its logical axes; a leaf without
    logical axes (an optimizer step count, an unannotated variable) is replicated.
    """

    def one(leaf):
        axes = logical_axes(leaf)
        shape = getattr(leaf, "shape", ())
        spec = P() if axes is None else logical_partition_spec(axes, shape, mesh)
        sharding = NamedSharding(mesh, spec)
        return leaf.replace(sharding) if isinstance(leaf, nnx.Variable) else sharding

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def model_shardings(model: nnx.Module, mesh: Mesh):
    """The sharding pytree of `nnx.state(model)` (same structure), for jit in/out shardings:

    graphdef, state = nnx.split(model)
    fn = jax.jit(forward, in_shardings=(model_shardings(model, mesh), batch_sharding(mesh)))
    """
    return state_shardings(nnx.state(model), mesh)


def shard_model(model: nnx.Module, mesh: Mesh) -> nnx.Module:
    """Place every parameter of `model` on `mesh` by the partition rules (in place; returns it)."""
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, state_shardings(state, mesh)))
    return model


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Token batches [B, T]: rows split over data x fsdp, sequence replicated."""
    return NamedSharding(mesh, P(("data", "fsdp"), None))
