"""Atomic file writes: a reader (or a resumed run) sees the old file or the whole new one, never a part.

Every output of every stage is written through `atomic_write`: the content goes to a uniquely named
temporary file ``NAME.<random>.tmp`` in the destination's directory, is fsynced, and is renamed onto
``NAME`` (``os.replace``, atomic within one file system). The unique name lets several hosts write
the same shared file at once, and the ``.tmp`` suffix lets a resumed run find and delete what a
killed one left (see `pplaw_jax.landscape.directory.discard_unfinished`). ``tempfile.mkstemp`` creates
files with mode 0600; the temporary file is given the usual ``0666 & ~umask`` instead, so outputs
on a shared file system stay readable by the other hosts and users, as with a plain ``open()``.

Object stores (a URL, see `pplaw_jax.paths`) have no rename: there `atomic_write` fills a local
temporary file and uploads it as the object in one request; GCS and S3 (and fsspec's memory
filesystem) make an object visible only once its upload is complete, so a reader still sees the
old object or the whole new one. Nothing temporary is ever written to the store, so there is
nothing for `discard_temporaries` to remove there. Each contract's completion marker, written
last, is what makes a directory complete, locally and on a store alike.

A foundation module: it imports nothing from the stages (only `pplaw_jax.errors`, `pplaw_jax.paths`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pplaw_jax.errors import PplawError
from pplaw_jax.paths import AnyPath, PathSpec, URLPath, as_path, is_url, local_path, url_path

TMP_SUFFIX = ".tmp"
# the names tempfile.mkstemp / mkdtemp give (8 characters of [a-z0-9_]) with our prefixes/suffix
_TEMP_NAME = re.compile(r"^.+\.[a-z0-9_]{8}\.tmp$")
_STAGING_NAME = re.compile(r"^\..+\.tmp-[a-z0-9_]{8}$")
# The umask can only be read by setting it; do that once, at import, rather than racing other threads.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: PathSpec, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` to fill a temporary file beside `path`, fsync it, then rename it onto `path`.

    `write` receives the temporary path (an existing empty file) and may open it by name, so
    writers that want a path (``pq.write_table``, ``fig.savefig``, ``DataFrame.to_csv``) work as
    is. On any exception the temporary file is removed and the exception propagates; `path` is
    then untouched. For a URL, the temporary file is local (``NAME`` in a temporary directory)
    and is uploaded onto `path` in one request once `write` has returned.
    """
    if is_url(path):
        target = url_path(path)
        with tempfile.TemporaryDirectory(prefix="pplaw-upload-") as d:
            tmp = Path(d) / target.name
            tmp.touch()
            write(tmp)
            target.upload(tmp)
        return
    local = local_path(path)
    fd, name = tempfile.mkstemp(dir=local.parent, prefix=local.name + ".", suffix=TMP_SUFFIX)
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)
        finally:
            os.close(fd)
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, local)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def staging_dir(final: str | os.PathLike) -> Path:
    """A new empty directory beside `final` (``.NAME.tmp-<random>``) to fill and then rename onto it.

    ``tempfile.mkdtemp`` makes it 0700; it gets ``0777 & ~umask`` like a plain ``mkdir``, so the
    published directory is readable by the other hosts and users (see `publish_modes` for files).
    """
    final = Path(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    return tmp


def discard_temporaries(directory: PathSpec, owned: Iterable[str] | None = None) -> None:
    """Remove what killed writers left below `directory`: `atomic_write` temporaries
    (``NAME.<random>.tmp``) and `staging_dir` directories (``.NAME.tmp-<random>``).  Only for what
    the caller alone writes (it holds `output_lock`): a live writer's temporaries would go too.
    With `owned` (file or directory names), only the temporaries of those names directly in
    `directory` (a multi-host command whose process 0 alone writes them); else all, recursively."""
    if is_url(directory):
        return  # an object-store write is one upload from a local temporary: none are left there
    root = local_path(directory)
    if not root.is_dir():
        return
    if owned is None:
        candidates = sorted(root.rglob("*"), reverse=True)  # deepest first
    else:
        names = set(owned)
        candidates = [
            p
            for p in root.iterdir()
            if (p.name.rsplit(".", 2)[0] if _TEMP_NAME.match(p.name) else p.name[1:].split(".tmp-")[0]) in names
        ]
    for path in candidates:
        if path.is_dir() and _STAGING_NAME.match(path.name):
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and _TEMP_NAME.match(path.name):
            path.unlink(missing_ok=True)


def publish_modes(directory: str | Path) -> None:
    """Give every file below `directory` ``0666 & ~umask`` (some writers, e.g. safetensors'
    ``save_file``, create 0600 files), so an export follows the umask like every other output."""
    for root, _, files in os.walk(directory):
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~_UMASK)


def check_output_path(path: PathSpec, kind: str) -> None:
    """Fail fast (before any expensive work) when `path` cannot become the output: `kind` is
    ``"dir"`` (an output directory: may exist, as a directory) or ``"file"`` (an output file: must
    not be a directory); the nearest existing ancestor must be a writable directory.  Object-store
    URLs: the filesystem's backend must be installed (else the error names the extra to install)
    and the kind must match what exists; there is no writability check without writing.  Raises
    PplawError naming the path."""
    text = str(path) if isinstance(path, URLPath) else os.fspath(path)
    if is_url(text):
        u = as_path(text)  # PplawError naming the extra when the backend is missing
        if kind == "dir" and u.is_file():
            raise PplawError(f"--out {u}: exists and is not a directory")
        if kind == "file" and u.is_dir():
            raise PplawError(f"--out {u}: is a directory; expected a file path")
        return
    p = Path(text)
    if p.is_symlink() and not p.exists():
        raise PplawError(f"--out {p}: a symbolic link to {os.readlink(p)}, which does not exist")
    if kind == "dir" and p.exists() and not p.is_dir():
        raise PplawError(f"--out {p}: exists and is not a directory")
    if kind == "file" and p.is_dir():
        raise PplawError(f"--out {p}: is a directory; expected a file path")
    ancestor = p if kind == "dir" else p.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PplawError(f"--out {p}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PplawError(f"--out {p}: {ancestor} is not writable")


def _comparable(spec: object) -> str | None:
    """A path spec as one comparable string: local paths resolved (links followed, ``scratch:``
    stripped, a glob cut to its fixed directory), URLs normalised; None for what names no path
    (``tfds:`` specs)."""
    spec = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else str(spec)
    if spec.startswith("tfds:"):
        return None
    spec = spec.removeprefix("scratch:")
    if is_url(spec):
        return str(as_path(spec)).rstrip("/")
    if any(c in spec for c in "*?[") and not os.path.exists(spec):
        fixed = []
        for part in spec.split(os.sep):
            if any(c in part for c in "*?["):
                break
            fixed.append(part)
        spec = os.sep.join(fixed) or "."
    return os.path.realpath(spec)


def check_not_over_inputs(out: PathSpec, out_flag: str, inputs: dict[str, object]) -> None:
    """Refuse, before anything is written, an output that is, is inside, or contains one of the
    command's inputs (`inputs`: flag -> path or list of paths; None skipped): a command never
    writes over what it reads.  PplawError naming both."""
    o = _comparable(out)
    if o is None:
        return
    for flag, value in inputs.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is None:
                continue
            i = _comparable(str(item).split("=", 1)[-1] if flag == "--run" else item)
            if i is None:
                continue
            if o == i:
                relation = "is"
            elif o.startswith(i.rstrip("/") + "/"):
                relation = "is inside"
            elif i.startswith(o.rstrip("/") + "/"):
                relation = "contains"
            else:
                continue
            raise PplawError(
                f"{out_flag} {out} {relation} the input {flag} {item}: a command never writes "
                "over its inputs; choose another output"
            )


LOCK_PREFIX = ".pplaw-lock-host"


@contextlib.contextmanager
def output_lock(out_dir: PathSpec, host: int = 0) -> Iterator[AnyPath]:
    """Hold the advisory lock ``OUT_DIR/.pplaw-lock-hostHHH`` while a command writes `out_dir`.

    One writer per output directory (per host: the hosts of a multi-host run write their own
    parts of one directory, each under its own lock). A second process that wants the same lock
    gets a PplawError naming the directory and the holder's pid instead of interleaving its
    writes with the first. ``fcntl.flock`` locks are released by the kernel when the holder dies,
    so a ``kill -9`` never leaves a directory locked. The lock file is removed on exit; because a
    waiting process may have opened it just before, a freshly acquired lock is kept only if the
    path still names the locked file (else it is retried). `out_dir` is created if needed, and
    removed again on exit if this call created it and it is still empty (a refused command leaves
    nothing behind). Object-store URLs are not locked: there is no flock on an object store, so
    nothing stops two commands writing one URL at once (keep one writer per URL yourself); the
    URL's path object is yielded.
    """
    if is_url(out_dir):
        yield as_path(out_dir)
        return
    root = local_path(out_dir)
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{LOCK_PREFIX}{host:03d}"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise PplawError(
                f"{root}: another pplaw process (pid {holder}) is writing this directory; "
                f"wait for it or use another --out"
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file after we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield root
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                root.rmdir()


FINGERPRINT_EDGE = 1 << 20  # bytes read from each end of a file


def check_identity(
    path: PathSpec, identity: dict, refusal: str, *, partial: bool = False, sort_keys: bool = False
) -> None:
    """Record what defines an output (`identity`, JSON at `path`), or refuse one that holds another's:
    the one "is this the same run?" check of every resumable command (`pplaw score`, `pplaw train`).

    A key ending in ``_content`` (a content fingerprint) that either side lacks (None: a stream or
    an object store) is unknown, not different. With `partial`, only the keys both records have are
    compared and nothing is written (a finished run answering "nothing to do"). A difference raises
    PplawError ``refusal.format(changes="key: old -> new; ...")``.
    """
    path = as_path(path)
    if path.exists():
        old = json.loads(path.read_text())
        keys = set(identity) & set(old) if partial else set(old) | set(identity)
        changes = "; ".join(
            f"{k}: {old.get(k)!r} -> {identity.get(k)!r}"
            for k in sorted(keys)
            if old.get(k) != identity.get(k) and not (k.endswith("_content") and None in (old.get(k), identity.get(k)))
        )
        if changes:
            raise PplawError(refusal.format(changes=changes))
    elif not partial:
        write_json(path, identity, sort_keys=sort_keys)


def content_fingerprint(paths: Iterable[PathSpec]) -> str:
    """A short hash of what the files hold: per file (in the given order) its name, size and its
    first and last MiB.  Bounded cost on a 100 GB checkpoint, and it tells apart two checkpoints
    of one architecture (their first tensors differ right after the header) or two corpora; a
    change confined to the middle of a file larger than 2 MiB is not seen.  Modification times
    are left out on purpose: copying a checkpoint must not make it a different model."""
    h = hashlib.sha256()
    for path in paths:
        path = as_path(path)
        size = path.stat().st_size
        h.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as f:
            h.update(f.read(FINGERPRINT_EDGE))
            if size > FINGERPRINT_EDGE:
                f.seek(max(FINGERPRINT_EDGE, size - FINGERPRINT_EDGE))
                h.update(f.read())
    return h.hexdigest()[:16]


def file_sha256(path: PathSpec) -> str:
    """sha256 of a file's bytes (for inputs small enough to hash whole: selections, fits, tables)."""
    h = hashlib.sha256()
    with as_path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def json_digest(path: PathSpec, ignore: Iterable[str] = ()) -> str:
    """sha256 of a JSON file's content as canonical JSON (sorted keys), without the keys in
    `ignore` at any depth: the identity of a summary or fit.json, not of its timing fields (two
    runs that produce the same result get the same digest)."""
    drop = set(ignore)

    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in drop}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    with as_path(path).open(encoding="utf-8") as f:
        obj = json.load(f)
    return hashlib.sha256(json.dumps(strip(obj), sort_keys=True).encode()).hexdigest()


def tree_files(path: PathSpec) -> list[AnyPath]:
    """A file, or every non-hidden file below a directory, sorted by relative path."""
    root = as_path(path)
    if root.is_file():
        return [root]
    # each p comes from root.rglob: the same kind of path (local or URL) as root
    found = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}  # type: ignore[arg-type]
    return [found[rel] for rel in sorted(found) if not any(part.startswith(".") for part in rel.split("/"))]


def write_bytes(path: PathSpec, data: bytes) -> None:
    """Atomically write `data` to `path` (a URL: uploaded in one request)."""
    if is_url(path):
        as_path(path).write_bytes(data)
        return
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: PathSpec, text: str) -> None:
    """Atomically write `text` (UTF-8) to `path`."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: PathSpec, obj: Any, *, sort_keys: bool = False) -> None:
    """Atomically write `obj` as JSON indented by 2, with a final newline.

    NaN and ±inf become ``null`` (strict JSON, readable by pandas and JavaScript); numpy scalars
    and arrays become plain numbers and lists; tuples become lists; keys become strings.
    """
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"
    write_text(path, text)


def write_jsonl(path: PathSpec, rows: Iterable[Any]) -> None:
    """Atomically write one ``json.dumps(row)`` line per row (streamed, UTF-8)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")

    atomic_write(path, write)


def _jsonable(obj: Any) -> Any:
    """`obj` with numpy values made plain and non-finite floats made None, recursively."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj
