"""The one sharded LM forward: a model on a device mesh and its jitted per-sequence NLL.

Parameters are placed by `pplaw_jax.distributed`'s rules (a model loaded with ``mesh=`` is already
there and nothing moves), batches are split by rows over ``data x fsdp``, and the loss is
`models.loss.token_nll`: what `pplaw score`, `pplaw eval` and `pplaw train`'s evaluations compute,
and the forward of `train.loop.Trainer`'s step.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import cast

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pplaw_jax.distributed import batch_sharding, state_shardings
from pplaw_jax.errors import PplawError
from pplaw_jax.models.loss import token_nll

_JITTED: dict[Hashable, Callable] = {}


def shared_jit(key: Hashable, fn: Callable, **jit_kwargs) -> Callable:
    """This process's one `jax.jit(fn, **jit_kwargs)` for `key`, which must name everything `fn`
    closes over (the model's graph definition, the shardings, the optimizer's settings).

    Every `ShardedLM` or `Trainer` of the same model graph on the same shardings thus reuses the
    executables compiled for the first: the runs of a `pplaw run` study after its first (one
    process) neither trace nor compile their steps again. Same executable, same numbers: a run's
    outputs do not depend on which runs came before it in the process.
    """
    jitted = _JITTED.get(key)
    if jitted is None:
        jitted = _JITTED[key] = jax.jit(fn, **jit_kwargs)
    return jitted


def tree_key(tree) -> tuple:
    """A pytree of hashable leaves (e.g. shardings) as a hashable key: its structure and leaves."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple(leaves)


def data_parallel_size(mesh) -> int:
    """Ways a batch is split: the product of the `data` and `fsdp` mesh axes."""
    return int(mesh.shape["data"] * mesh.shape["fsdp"])


class ShardedLM:
    """A causal LM placed on a mesh, with the jit-compiled per-sequence NLL that scoring (`pplaw
    score`), evaluation (`pplaw eval`, the lm-eval adapter, eval losses) and training (`Trainer`)
    share."""

    def __init__(self, model: nnx.Module, mesh):
        self.mesh = mesh
        # two filters (the parameters, then everything else): exactly one graphdef and two states
        split = cast("tuple[nnx.GraphDef[nnx.Module], nnx.State, nnx.State]", nnx.split(model, nnx.Param, ...))
        self.graphdef, params, rest = split
        self.param_shardings = state_shardings(params, mesh)
        self.rest_shardings = state_shardings(rest, mesh)
        self.params = jax.device_put(params, self.param_shardings)
        self.rest = jax.device_put(rest, self.rest_shardings)
        self.tokens_sharding = batch_sharding(mesh)  # [B, T]
        self.rows_sharding = NamedSharding(mesh, P(self.tokens_sharding.spec[0]))  # [B]
        graphdef = self.graphdef

        def nll(params, rest, input_ids, lengths, first):
            return token_nll(nnx.merge(graphdef, params, rest)(input_ids), input_ids, lengths, first)

        rows, toks = self.rows_sharding, self.tokens_sharding
        self.state_key = (graphdef, tree_key(self.param_shardings), tree_key(self.rest_shardings), toks, rows)
        self._nll = shared_jit(
            ("nll", *self.state_key),
            nll,
            in_shardings=(self.param_shardings, self.rest_shardings, toks, rows, rows),
            out_shardings=(rows, rows),
        )

    def put(self, array: np.ndarray) -> jax.Array:
        """A global batch array (identical on every host) placed by rows over data x fsdp."""
        sharding = self.tokens_sharding if array.ndim == 2 else self.rows_sharding
        return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

    def forward(self, input_ids: np.ndarray, lengths: np.ndarray, first: np.ndarray | None = None):
        """(sum_nll [B], n_tokens [B]) as device arrays, dispatched asynchronously (the scorer keeps
        one batch in flight); `first` defaults to 1 (all but the start token)."""
        if input_ids.shape[0] % data_parallel_size(self.mesh):
            raise PplawError(
                f"batch of {input_ids.shape[0]} rows is not a multiple of the data x fsdp mesh size "
                f"{data_parallel_size(self.mesh)}"
            )
        first = np.ones_like(lengths) if first is None else first
        return self._nll(self.params, self.rest, self.put(input_ids), self.put(lengths), self.put(first))

    def nll(self, input_ids: np.ndarray, lengths: np.ndarray, first: np.ndarray | None = None):
        """`forward`, fetched: (sum_nll [B], n_tokens [B]) as numpy on every host."""
        return tuple(fetch(x) for x in self.forward(input_ids, lengths, first))

    def model(self) -> nnx.Module:
        """The model with the current parameters (e.g. for export)."""
        return nnx.merge(self.graphdef, self.params, self.rest)


def fetch(x: jax.Array) -> np.ndarray:
    """A (possibly multi-host) global array as numpy on every host."""
    if x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
