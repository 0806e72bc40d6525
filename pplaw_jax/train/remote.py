"""`pplaw train --out URL`: the run works in a local copy of its directory, mirrored to the URL.

orbax checkpoints, the token cache (memory-mapped ``.npy``), ``metrics.jsonl`` (appended every
step), TensorBoard event files and the HF export (assembled and renamed) all want a local file
system, and an object store has neither appends, renames nor memory maps. So a run whose ``--out``
is a URL trains in a local working directory, ``$PPLAW_CACHE/runs/<hash of the URL>/``
(`pplaw_jax.paths.cache_root`), and the URL receives:

* ``run.json`` and ``eval.json``, written there directly (``eval.json`` last of all: the run's
  completion marker, as for a local run);
* after every checkpoint (saving then waits for orbax to finish): the new step's files under
  ``checkpoints/<step>/``, orbax's root files, ``metrics.jsonl`` and ``tensorboard/``, and then
  ``checkpoints.json`` (the steps whose upload is complete, written last); steps that orbax's
  keep-last-N dropped are deleted from the URL after that;
* at the end, ``hf/`` (file by file), the final logs, then ``eval.json``.

A restart (on this machine or any other) first rebuilds the working copy from the URL: the
latest step that ``checkpoints.json`` lists, ``metrics.jsonl`` and ``tensorboard/``; whatever the
working copy held of those is discarded, so the URL is the truth and a checkpoint whose upload a
kill interrupted is never resumed from. The token cache ``data/`` stays local (it is rebuilt when
missing, keyed by its inputs as always). Once ``eval.json`` is on the URL the working copy is
removed.

orbax can write ``gs://`` itself, but one path for every URL scheme is the one the tests cover
(on fsspec's memory filesystem); the cost is a local copy of the latest checkpoints. Training to a
URL runs in one process: several hosts would each stage only their shards of every checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import LOCK_PREFIX, write_json
from pplaw_jax.logs import get_logger
from pplaw_jax.paths import as_path, cache_root, download_tree, rmtree, upload_tree, url_key

CHECKPOINTS = "checkpoints"
MANIFEST = "checkpoints.json"  # on the URL: the checkpoint steps whose upload is complete
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
HF = "hf"

log = get_logger("train")


def working_dir(url) -> Path:
    """The local working copy of the run directory at `url`."""
    return cache_root() / "runs" / url_key(url)


class RunMirror:
    """Mirrors the local working copy `local` of a run to the URL `url` (see the module docstring)."""

    def __init__(self, url):
        self.url = as_path(url)
        self.local = working_dir(url)

    def _steps_uploaded(self) -> list[int]:
        path = self.url / MANIFEST
        if not path.is_file():
            return []
        try:
            return sorted(int(s) for s in json.loads(path.read_text())["steps"])
        except (ValueError, KeyError, TypeError) as e:
            raise PplawError(f"{path}: not a checkpoint manifest ({e}); remove it to train from the start") from None

    def pull(self) -> int | None:
        """Replace the working copy's checkpoints and logs with the URL's; the step resumed from."""
        self.local.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.local / CHECKPOINTS, ignore_errors=True)
        shutil.rmtree(self.local / TENSORBOARD, ignore_errors=True)
        shutil.rmtree(self.local / HF, ignore_errors=True)
        (self.local / METRICS).unlink(missing_ok=True)
        steps = self._steps_uploaded()
        latest = steps[-1] if steps else None
        if latest is not None:
            remote = self.url / CHECKPOINTS
            for item in remote.iterdir():  # orbax's root files, and the latest step only
                if item.is_file():
                    download_tree(item, self.local / CHECKPOINTS)
            download_tree(remote / str(latest), self.local / CHECKPOINTS / str(latest))
        if (self.url / METRICS).is_file():
            download_tree(self.url / METRICS, self.local)
        if (self.url / TENSORBOARD).is_dir():
            download_tree(self.url / TENSORBOARD, self.local / TENSORBOARD)
        if latest is not None:
            log.info(f"resuming {self.url} from its uploaded checkpoint at step {latest} (working copy {self.local})")
        return latest

    def _push_logs(self) -> None:
        if (self.local / METRICS).is_file():
            (self.url / METRICS).upload(self.local / METRICS)
        if (self.local / TENSORBOARD).is_dir():
            upload_tree(self.local / TENSORBOARD, self.url / TENSORBOARD)

    def push_checkpoint(self, step: int) -> None:
        """Upload checkpoint `step` (saved and finished), the logs, then the manifest; delete the
        URL's steps that the working copy no longer keeps."""
        local = self.local / CHECKPOINTS
        kept = sorted(int(p.name) for p in local.iterdir() if p.is_dir() and p.name.isdigit())
        if step not in kept:
            raise PplawError(f"{local / str(step)}: checkpoint missing after saving it")
        for item in local.iterdir():
            if item.is_file():
                (self.url / CHECKPOINTS / item.name).upload(item)
        upload_tree(local / str(step), self.url / CHECKPOINTS / str(step))
        self._push_logs()
        uploaded = [s for s in self._steps_uploaded() if s in kept and s != step] + [step]
        write_json(self.url / MANIFEST, {"steps": sorted(uploaded)})
        remote = self.url / CHECKPOINTS
        for item in remote.iterdir():
            if item.name.isdigit() and int(item.name) not in uploaded:
                rmtree(item)

    def push_final(self) -> None:
        """Upload the HF export and the final logs (before the caller writes ``eval.json``)."""
        rmtree(self.url / HF)
        upload_tree(self.local / HF, self.url / HF)
        self._push_logs()

    def discard_working_copy(self) -> None:
        """Remove the working copy of a finished run (its lock file stays to its holder)."""
        for item in self.local.iterdir():
            if item.name.startswith(LOCK_PREFIX):
                continue
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
