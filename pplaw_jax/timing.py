"""Wall time by kind of work (loading, compilation, training steps, evaluation, ...), for the
runs' `eval.json` and the report's time table.

JAX compiles synchronously inside the first call of a jitted function, so compilation would hide
in whichever section called it: `compile_seconds()` counts it apart, from JAX's own compilation
events (tracing, lowering and the backend compile; a persistent-cache hit counts only what it
still costs), and a `Clock` section gives its share to `compile`. JAX dispatches asynchronously:
a section ends when its work was waited for, so the loop settles the steps in flight before it
starts an evaluation or a checkpoint (`train.loop`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import jax

# jax._src.dispatch's event names: tracing to a jaxpr, lowering to MLIR, the backend compile
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compiled = [0.0]  # seconds of compilation in this process so far (one listener, registered once)


def _on_event(event: str, duration_secs: float, **_: str | int) -> None:
    if event in COMPILE_EVENTS:
        _compiled[0] += duration_secs


jax.monitoring.register_event_duration_secs_listener(_on_event)


def compile_seconds() -> float:
    """Seconds this process has spent compiling JAX functions (tracing, lowering, compiling)."""
    return _compiled[0]


class Clock:
    """Seconds by kind of work: `with clock("train"): ...` adds the section's wall time to `train`,
    less the compilation inside it, which goes to `compile`. Sections do not nest."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, kind: str) -> Iterator[None]:
        compiled, started = compile_seconds(), time.perf_counter()
        try:
            yield
        finally:
            spent_compiling = compile_seconds() - compiled
            self.add("compile", spent_compiling)
            self.add(kind, time.perf_counter() - started - spent_compiling)

    def add(self, kind: str, seconds: float) -> None:
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds

    def rounded(self) -> dict[str, float]:
        """The seconds, to the millisecond, in a fixed order (for a JSON record)."""
        return {k: round(v, 3) for k, v in sorted(self.seconds.items())}
