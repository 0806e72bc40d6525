"""Checkpoint tensors placed straight into their shards.

A loader describes each checkpoint tensor as a `TensorSource`: its shape in the model's layout
and a `read(index)` that returns just that slice (from a memory-mapped safetensors file, rows of a
GGUF tensor dequantised on demand, or an in-memory array). `place_model` builds the model
abstractly (`nnx.eval_shape`, no weights), gives every parameter the `NamedSharding` its logical
axes map to on the mesh (`pplaw_jax.distributed`), and creates each parameter with
`jax.make_array_from_callback`, which asks only for the slices this host's devices hold. So no
device holds more than its share of the parameters plus the one tensor being placed, a checkpoint
larger than one device loads onto a mesh that can hold it, and each host reads only its slices.
The decoder built is the one of the config's family (`decoder_class`: Llama family or Gemma 3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from pplaw_jax.distributed import state_shardings
from pplaw_jax.errors import PplawError
from pplaw_jax.models import registry
from pplaw_jax.models.config import ModelConfig
from pplaw_jax.models.gemma3 import Gemma3Config, Gemma3ForCausalLM
from pplaw_jax.models.llama import LlamaForCausalLM, checkpoint_names, is_stacked

Index = tuple[slice, ...]  # one concrete slice (start, stop, step 1) per dim


class TensorSource(Protocol):
    """One checkpoint tensor, readable by slices, in the model's layout (kernels [in, out])."""

    @property
    def name(self) -> str:
        """What error messages call it (the tensor's name in the file)."""
        ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    def read(self, index: Index) -> np.ndarray:
        """The slice `index` of the tensor (any float dtype; the caller casts)."""
        ...


@dataclass(frozen=True)
class ArraySource:
    """An in-memory array."""

    name: str
    array: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def read(self, index: Index) -> np.ndarray:
        return self.array[index]


@dataclass(frozen=True)
class Transposed:
    """A 2-D source stored transposed (PyTorch `weight` [out, in] read as a kernel [in, out])."""

    inner: TensorSource

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.inner.shape))

    def read(self, index: Index) -> np.ndarray:
        return self.inner.read(tuple(reversed(index))).T


@dataclass(frozen=True)
class Stacked:
    """Per-layer sources of the same shape seen as one [layers, ...] tensor (a scanned model)."""

    layers: Sequence[TensorSource]

    @property
    def name(self) -> str:
        return f"{self.layers[0].name} .. {self.layers[-1].name}"

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.layers), *self.layers[0].shape)

    def read(self, index: Index) -> np.ndarray:
        rest = index[1:]
        return np.stack([self.layers[i].read(rest) for i in range(*index[0].indices(len(self.layers)))])


@dataclass(frozen=True)
class Shifted:
    """A source read with `offset` added (GGUF stores Gemma's zero-centred norm weights as 1 + w)."""

    inner: TensorSource
    offset: float

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.inner.shape)

    def read(self, index: Index) -> np.ndarray:
        return np.asarray(self.inner.read(index), dtype=np.float32) + np.float32(self.offset)


def decoder_class(config: ModelConfig | Gemma3Config) -> type:
    """The NNX decoder built from `config`: its family's (`models.registry`)."""
    return registry.of_config(config).decoder_class


def place(
    shape: tuple[int, ...], dtype, sharding: jax.sharding.Sharding | None, read: Callable[[Index], np.ndarray]
) -> jax.Array:
    """A `dtype` array of `shape` laid out by `sharding`, built from `read(index)` of each slice
    this host's devices hold (each distinct slice read once, however many devices replicate it).

    `sharding=None` reads the whole tensor into an uncommitted array on the default device, as
    `jnp.asarray` does: free to follow its inputs, and re-shardable onto a multi-host mesh (a
    committed single-device array would instead be the source of a cross-host transfer).
    """
    if sharding is None:
        return jax.device_put(np.array(read(tuple(slice(0, n) for n in shape)), dtype=dtype))
    slices: dict[tuple, np.ndarray] = {}

    def callback(index) -> np.ndarray:
        concrete = tuple(slice(*s.indices(n)) for s, n in zip(index, shape))
        key = tuple((s.start, s.stop) for s in concrete)
        if key not in slices:
            slices[key] = np.array(read(concrete), dtype=dtype)  # an owned copy, cast
        return slices[key]

    return jax.make_array_from_callback(shape, sharding, callback)


def place_model(
    config: ModelConfig | Gemma3Config,
    sources: Mapping[str, TensorSource],
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    mesh: Mesh | None = None,
    source: str = "checkpoint",
    **model_kwargs,
) -> LlamaForCausalLM | Gemma3ForCausalLM:
    """A model (`decoder_class(config)`) whose parameters are read from `sources` (keyed by
    checkpoint name, as `flat_params` names them), cast to `param_dtype` and placed by their logical
    axes on `mesh` (None: the default device, uncommitted, see `place`). Either layout
    (`scan_layers`, Llama family only) loads from the same per-layer sources.

    Missing, unexpected or mis-shaped tensors raise PplawError naming `source` and the tensor,
    before anything is read.
    """
    param_dtype = jnp.dtype(param_dtype)
    cls = decoder_class(config)
    abstract = nnx.eval_shape(
        lambda: cls(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0), **model_kwargs)
    )
    graphdef, state = nnx.split(abstract)
    scanned = abstract.scan_layers
    flat = list(nnx.to_flat_state(state))
    if mesh is None:
        shardings = [None] * len(flat)
    else:
        shardings = [var.get_value() for _, var in nnx.to_flat_state(state_shardings(state, mesh))]

    plan = []
    expected = {}
    for path, var in flat:
        names = checkpoint_names(path, scanned, config.num_layers)
        shape = tuple(var.shape[1:]) if is_stacked(path, scanned) else tuple(var.shape)
        expected.update({name: shape for name in names})
        plan.append((path, var, names))
    missing = sorted(set(expected) - set(sources))
    unexpected = sorted(set(sources) - set(expected))
    if missing or unexpected:
        raise PplawError(
            f"{source}: weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for name, shape in expected.items():
        if tuple(sources[name].shape) != shape:
            raise PplawError(
                f"{source}: tensor {sources[name].name} has shape {tuple(sources[name].shape)} as {name}, "
                f"config implies {shape}"
            )

    pure: dict = {}
    for (path, var, names), sharding in zip(plan, shardings):
        tensor = Stacked([sources[n] for n in names]) if is_stacked(path, scanned) else sources[names[0]]
        node = pure
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = place(tuple(var.shape), param_dtype, sharding, tensor.read)
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def model_from_params(
    config: ModelConfig | Gemma3Config,
    params: Mapping[str, np.ndarray],
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    source: str = "checkpoint",
    mesh: Mesh | None = None,
    **model_kwargs,
) -> LlamaForCausalLM | Gemma3ForCausalLM:
    """`place_model` from in-memory arrays keyed by checkpoint name, in the model's layout."""
    sources = {name: ArraySource(name, np.asarray(array)) for name, array in params.items()}
    return place_model(config, sources, dtype=dtype, param_dtype=param_dtype, mesh=mesh, source=source, **model_kwargs)
