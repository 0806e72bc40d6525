"""Logging for every command: levels, a host prefix on multi-host runs, and progress that suits
where the output goes.

- `setup()` (called by `pplaw_jax.cli.main`) sends the ``pplaw`` loggers to stderr with a time
  stamp, at the level of ``PPLAW_LOG_LEVEL`` (default INFO). Once `jax.distributed` is up with more
  than one process, every line carries ``[host i/n]``, so interleaved logs of a pod stay readable.
- `progress(...)` is a tqdm bar when stderr is a terminal, and otherwise (a batch job's log file,
  a pipe) a `ProgressLog` that writes one log line every ``PPLAW_PROGRESS_SECONDS`` (default 30)
  and one at the end, instead of thousands of carriage-return updates.

Results a command prints for scripts (JSON summary lines on stdout) are not log records.
A foundation module: it imports nothing from the stages.
"""

from __future__ import annotations

import logging
import os
import sys
import time

LOGGER = "pplaw"


def get_logger(name: str) -> logging.Logger:
    """The logger ``pplaw.<name>`` (e.g. ``pplaw.fit``)."""
    return logging.getLogger(f"{LOGGER}.{name}")


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to the *current* sys.stderr (test captures replace it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _HostPrefix(logging.Filter):
    """Adds ``record.host``: `` [host i/n]`` once a multi-process JAX run is initialised, else ''."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.host = ""
        distributed = sys.modules.get("pplaw_jax.distributed")
        if distributed is not None and getattr(distributed, "_initialized", False):
            import jax

            record.host = f" [host {jax.process_index()}/{jax.process_count()}]"
        return True


def setup(level: str | None = None) -> None:
    """Route the ``pplaw`` loggers to stderr at `level` (default ``$PPLAW_LOG_LEVEL`` or INFO)."""
    level = (level or os.environ.get("PPLAW_LOG_LEVEL") or "INFO").upper()
    root = logging.getLogger(LOGGER)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s%(host)s: %(message)s", "%H:%M:%S"))
        handler.addFilter(_HostPrefix())
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


class ProgressLog:
    """tqdm's interface (update, set_postfix, close, context manager) as periodic log lines."""

    def __init__(self, desc: str, total: int | None, unit: str, initial: int, logger: logging.Logger, every_s: float):
        self.desc, self.total, self.unit, self.n = desc, total, unit, initial
        self.logger, self.every_s = logger, every_s
        self.start = self.last = time.perf_counter()
        self.initial, self.postfix, self.closed = initial, "", False

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.perf_counter() - self.last >= self.every_s:
            self._log()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        """tqdm's signature; `refresh` (when tqdm redraws) means nothing for a log line."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _log(self) -> None:
        self.last = time.perf_counter()
        done = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        rate = (self.n - self.initial) / max(self.last - self.start, 1e-9)
        self.logger.info(
            f"{self.desc}: {done} {self.unit} ({rate:.3g} {self.unit}/s)"
            + (f", {self.postfix}" if self.postfix else "")
        )

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._log()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Disabled:
    """A progress object that shows nothing (non-main hosts)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress(
    desc: str,
    *,
    total: int | None = None,
    unit: str = "it",
    initial: int = 0,
    disable: bool = False,
    logger: logging.Logger | None = None,
):
    """A progress display for a loop: tqdm on a terminal, `ProgressLog` lines otherwise."""
    if disable:
        return _Disabled()
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
    every_s = float(os.environ.get("PPLAW_PROGRESS_SECONDS", "30"))
    return ProgressLog(desc, total, unit, initial, logger or get_logger("progress"), every_s)
