"""Bytes resident on each device while a model loads, measured after every array placement.

`ResidencyProbe` wraps `jax.make_array_from_callback` and `jax.device_put` (the two ways host data
reach a device) and, after each call, sums the per-device shard bytes of every live JAX array,
relative to what was live when the probe started. CPU devices report no `memory_stats()`, so this
is the measurement: it sees every array the process keeps, whichever code created it.
"""

from __future__ import annotations

import gc
import math
from collections import Counter

import jax


def device_bytes() -> Counter:
    """Bytes of live JAX arrays per device (each array's shard on each device that holds one)."""
    out: Counter = Counter()
    for array in jax.live_arrays():
        if array.is_deleted():
            continue
        per_shard = math.prod(array.sharding.shard_shape(array.shape)) * array.dtype.itemsize
        for device in array.sharding.addressable_devices:
            out[device] += per_shard
    return out


def shard_bytes(arrays) -> Counter:
    """Bytes per device of the given arrays (a device's share of them)."""
    out: Counter = Counter()
    for array in arrays:
        per_shard = math.prod(array.sharding.shard_shape(array.shape)) * array.dtype.itemsize
        for device in array.sharding.addressable_devices:
            out[device] += per_shard
    return out


class ResidencyProbe:
    """Peak bytes per device above the starting level, sampled after every placement."""

    def __init__(self, monkeypatch):
        gc.collect()
        self.baseline = device_bytes()
        self.peak: Counter = Counter()
        self.placements = 0
        for name in ("make_array_from_callback", "device_put"):
            monkeypatch.setattr(jax, name, self._wrap(getattr(jax, name)))

    def _wrap(self, fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            self.placements += 1
            self.sample()
            return out

        return wrapped

    def sample(self) -> None:
        now = device_bytes()
        for device in set(now) | set(self.baseline):
            self.peak[device] = max(self.peak[device], now[device] - self.baseline[device])
