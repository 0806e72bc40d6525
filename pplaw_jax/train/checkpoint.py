"""orbax checkpoints of a training run: `RUN/checkpoints/<step>/{state,meta}`.

`state` is the pytree `{"params", "opt_state"}` (sharded arrays, saved by every host in parallel);
`meta` is JSON (step, trained tokens, elapsed wall time, the run's fingerprint). orbax writes each
step to a temporary directory and renames it when complete, so a run killed mid-save leaves the
previous checkpoint as the latest one. Restoring takes an abstract target whose leaves carry the
*current* mesh's shardings, so a run may resume on a different mesh or device count.
"""

from __future__ import annotations

import os
from typing import TypeVar

import jax
import orbax.checkpoint as ocp

StateT = TypeVar("StateT")  # a pytree of the state saved and restored


def abstract_like(tree, shardings):
    """ShapeDtypeStructs with the given shardings: the restore target for `tree`'s structure."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), jax.eval_shape(lambda: tree), shardings
    )


class RunCheckpointer:
    """Periodic (every `save_every` steps), keep-last-`keep` checkpoints with JSON metadata."""

    def __init__(self, directory: str | os.PathLike, *, save_every: int, keep: int):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_every, create=True)
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, meta: dict, *, force: bool = False) -> bool:
        """Save if `step` is on the save interval (or `force`); asynchronous, returns whether it saved."""
        return self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=force,
        )

    def restore(self, step: int, abstract_state: StateT) -> tuple[StateT, dict]:
        """(state placed per `abstract_state`'s shardings, meta) of checkpoint `step` (the state has
        `abstract_state`'s tree structure, with arrays for its leaves)."""
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()),
        )
        return restored.state, dict(restored.meta)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
