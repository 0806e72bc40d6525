"""One path layer for local paths and object-store URLs (``gs://``, ``s3://``, any fsspec URL).

Every path a command takes may be a local path or a URL. `as_path` turns either into a path
object: a local path becomes a plain `pathlib.Path` (so everything local behaves exactly as it
always has), a URL becomes a `URLPath`, which has the subset of the pathlib API the stages use
(``/``, ``name``, ``parent``, ``with_suffix``, ``exists``, ``is_dir``, ``is_file``, ``glob``,
``iterdir``, ``read_text``, ``read_bytes``, ``open``, ``unlink``, ``mkdir``, ...) on top of
`fsspec <https://filesystem-spec.readthedocs.io>`_.

Why fsspec and not ``etils.epath``: fsspec is the layer the corpus readers already use (and pandas
and pyarrow read through it), it is installed with transformers (huggingface_hub needs it), and it
knows every URL scheme with a backend, including ``memory://``, the in-process filesystem the tests
run every command on; ``epath`` knows only ``gs://``, ``s3://``, ``az://`` and ``hf://`` (itself
through fsspec) and would be one more dependency. The backends for the clouds are optional extras
(``pip install -e '.[gcs]'`` for ``gcsfs``, ``-e '.[s3]'`` for ``s3fs``); a URL whose
backend is missing fails with one line naming the extra.

What an object store changes (see `pplaw_jax.fileio`):

* **No rename.** A local output is written to a temporary file and renamed into place; an object
  is uploaded in one request from a local temporary file, and GCS and S3 make an object visible
  only once its upload is complete (single, resumable and multipart uploads alike), so a reader
  never sees half an object. What makes a *directory* complete is, as everywhere in this project,
  its completion marker written last (``summary.json``, ``*.done``, ``fit.json``, ``eval.json``,
  ...), which readers require.
* **No directories.** ``mkdir`` is a no-op (a prefix exists once an object is below it), so a
  directory that holds nothing does not exist.
* **No locks.** ``fcntl`` locks exist only on local files: two commands writing the same URL at
  once are not stopped (see `pplaw_jax.fileio.output_lock`).
* **No memory maps.** Model weights (and GGUF files) are copied once into a local cache
  (`localize`, under ``$PPLAW_CACHE``, default ``~/.cache/pplaw``) and loaded from there, since
  safetensors and GGUF loading memory-map local files.

A foundation module: it imports nothing from the stages (only `pplaw_jax.errors`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

from pplaw_jax.errors import PplawError

CACHE_ENV = "PPLAW_CACHE"
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# URL scheme -> (package fsspec needs for it, extra of pplaw_jax that installs it)
BACKENDS = {"gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"), "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3")}


def scheme(path: Any) -> str | None:
    """The URL scheme of `path` (``"gs"``, ``"memory"``, ...), None for a local path."""
    if isinstance(path, URLPath):
        return path.scheme
    if isinstance(path, str):
        m = _URL.match(path)
        return m.group(1).lower() if m else None
    return None  # a pathlib.Path is local (it cannot hold "//")


def is_url(path: Any) -> bool:
    """Whether `path` is an object-store (fsspec) URL rather than a local path; ``file://`` URLs
    count as local."""
    s = scheme(path)
    return s is not None and s != "file"


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) of a URL; PplawError naming the extra to install when
    the scheme's backend is missing, or naming the scheme when fsspec knows none."""
    import fsspec

    s = scheme(url)
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        if s in BACKENDS:
            package, extra = BACKENDS[s]
            raise PplawError(
                f"{url}: {s}:// paths need the {package} package; install it with "
                f"pip install {package} (or, in the pplaw_jax checkout, pip install -e '.[{extra}]')"
            ) from None
        raise PplawError(f"{url}: the fsspec backend for {s}:// is not installed ({e})") from None
    except ValueError as e:
        raise PplawError(f"{url}: unknown URL scheme {s!r} ({e})") from None


class URLPath:
    """A path on an fsspec filesystem, spelled as its URL (``memory://bucket/dir/file.json``).

    It has the pathlib methods the stages use. It deliberately has no ``__fspath__``: handing a
    URL to ``open()`` or to a library that wants a local file is a bug that should fail loudly,
    not write a local file named ``memory:/...``; use `local_copy` or the library's URL support.
    """

    __slots__ = ("_url", "_fs", "_path", "_head_start")

    def __init__(self, url: str, fs: Any = None, path: str | None = None):
        m = _URL.match(url)
        if not m:
            raise ValueError(f"not a URL: {url!r}")
        if len(url) > m.end():
            url = url.rstrip("/")
        if fs is None or path is None:
            fs, path = filesystem(url)
        self._url: str = url
        self._fs: Any = fs
        self._path: str = path
        self._head_start = m.end()  # where the part after ``scheme://`` starts

    # ------------------------------------------------------------------ pure path operations
    @property
    def scheme(self) -> str:
        return self._url[: self._head_start - 3].lower()

    @property
    def fs(self) -> Any:
        return self._fs

    @property
    def fs_path(self) -> str:
        """The path within `fs` (what fsspec's methods take)."""
        return self._path

    def __str__(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"URLPath({self._url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, URLPath) and other._url == self._url

    def __hash__(self) -> int:
        return hash(self._url)

    def __lt__(self, other: URLPath) -> bool:
        return self._url < str(other)

    def __truediv__(self, other) -> URLPath:
        other = os.fspath(other) if isinstance(other, os.PathLike) else str(other)
        if is_url(other):
            return URLPath(other)
        other = other.strip("/")
        if not other or other == ".":
            return self
        return URLPath(f"{self._url}/{other}", self._fs, f"{self._path.rstrip('/')}/{other}")

    def joinpath(self, *parts) -> URLPath:
        out = self
        for part in parts:
            out = out / part
        return out

    @property
    def name(self) -> str:
        return self._url[self._head_start :].rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def suffixes(self) -> list[str]:
        return PurePosixPath(self.name).suffixes

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def parent(self) -> URLPath:
        head = self._url[self._head_start :]
        if "/" not in head:
            return self
        return URLPath(self._url.rsplit("/", 1)[0], self._fs, self._path.rsplit("/", 1)[0] or "/")

    def with_name(self, name: str) -> URLPath:
        return self.parent / name

    def with_suffix(self, suffix: str) -> URLPath:
        return self.with_name(str(PurePosixPath(self.name).with_suffix(suffix)))

    def relative_to(self, other: PathSpec) -> PurePosixPath:
        base = as_path(other)
        if not isinstance(base, URLPath):
            raise ValueError(f"{self} is not relative to {base}")
        return PurePosixPath(self._path).relative_to(base._path)

    def is_relative_to(self, other) -> bool:
        try:
            self.relative_to(other)
        except ValueError:
            return False
        return True

    def as_posix(self) -> str:
        return self._url

    def is_absolute(self) -> bool:
        return True

    def resolve(self, strict: bool = False) -> URLPath:
        return self

    absolute = expanduser = resolve

    # ------------------------------------------------------------------ queries
    def exists(self) -> bool:
        return self._fs.exists(self._path)

    def is_dir(self) -> bool:
        return self._fs.isdir(self._path)

    def is_file(self) -> bool:
        return self._fs.isfile(self._path)

    def stat(self) -> SimpleNamespace:
        try:
            info = self._fs.info(self._path)
        except FileNotFoundError:
            raise FileNotFoundError(f"no such object: {self._url}") from None
        return SimpleNamespace(st_size=int(info.get("size") or 0))

    def _child(self, fs_path: str) -> URLPath:
        base = self._path.rstrip("/")
        if fs_path.startswith(base + "/"):
            return URLPath(self._url + fs_path[len(base) :], self._fs, fs_path)
        return URLPath(self._fs.unstrip_protocol(fs_path), self._fs, fs_path)

    def glob(self, pattern: str) -> Iterator[URLPath]:
        found = self._fs.glob(f"{self._path.rstrip('/')}/{pattern}")
        return iter([self._child(p) for p in sorted(found) if p.rstrip("/") != self._path.rstrip("/")])

    def rglob(self, pattern: str) -> Iterator[URLPath]:
        return self.glob(f"**/{pattern}")

    def iterdir(self) -> Iterator[URLPath]:
        if not self.is_dir():
            raise (NotADirectoryError if self.exists() else FileNotFoundError)(str(self))
        found = self._fs.ls(self._path, detail=False)
        base = self._path.rstrip("/")
        return iter([self._child(p) for p in sorted(found) if p.rstrip("/") != base])

    # ------------------------------------------------------------------ content
    def read_bytes(self) -> bytes:
        try:
            return self._fs.cat_file(self._path)
        except FileNotFoundError:
            raise FileNotFoundError(f"no such object: {self._url}") from None

    def read_text(self, encoding: str | None = None, errors: str | None = None) -> str:
        return self.read_bytes().decode(encoding or "utf-8", errors or "strict")

    def open(self, mode: str = "r", encoding: str | None = None, errors: str | None = None, newline=None):
        if "b" in mode:
            return self._fs.open(self._path, mode)
        return self._fs.open(self._path, mode, encoding=encoding or "utf-8", errors=errors, newline=newline)

    def write_bytes(self, data: bytes) -> int:
        """Upload `data` as this object in one request (visible only once complete)."""
        self._fs.pipe_file(self._path, bytes(data))
        return len(data)

    def write_text(self, text: str, encoding: str | None = None) -> int:
        return self.write_bytes(text.encode(encoding or "utf-8"))

    def upload(self, local: str | os.PathLike) -> None:
        """Upload the local file `local` as this object (one upload, visible once complete)."""
        self._fs.put_file(os.fspath(local), self._path)

    # ------------------------------------------------------------------ changes
    def unlink(self, missing_ok: bool = False) -> None:
        try:
            if not self._fs.isfile(self._path):
                raise FileNotFoundError(f"no such object: {self._url}")
            self._fs.rm_file(self._path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        """A no-op: an object store has no directories (a prefix exists once an object is below
        it). FileExistsError if an object has this name."""
        if self._fs.isfile(self._path):
            raise FileExistsError(f"{self._url}: an object of that name exists")


AnyPath = Path | URLPath
# what a function that reads or writes local paths and URLs alike accepts
PathSpec = str | os.PathLike | URLPath


def hub_snapshot(repo_id: str, revision: str | None, allow_patterns: list[str], repo_type: str = "model") -> Path:
    """The local snapshot of a Hugging Face hub repository: from the cache alone when
    `HF_HUB_OFFLINE` is set, else downloaded into the cache (only `allow_patterns`), falling back
    to the cache when the hub cannot be reached. PplawError naming the repository, the cache
    searched and why when neither has it."""
    from huggingface_hub import constants, snapshot_download

    def download(local_files_only: bool) -> Path:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=allow_patterns,
                repo_type=repo_type,
                local_files_only=local_files_only,
            )
        )

    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    try:
        return download(local_files_only=offline)
    except Exception as first:  # no network, unknown or gated repository: the cache alone
        why = "HF_HUB_OFFLINE is set" if offline else f"the hub gave {type(first).__name__}"
        if not offline:
            try:
                return download(local_files_only=True)
            except Exception:
                pass
        raise PplawError(
            f"{repo_type} {repo_id!r} is not in the Hugging Face cache {constants.HF_HUB_CACHE} ({why})"
        ) from None


def canonical(spec: str | None) -> str | None:
    """A spec as recorded in a run's identity: an absolute path for a local path or glob (a resume
    from another directory still matches); URLs, ``tfds:`` / ``hf:`` specs and model names as given;
    a ``scratch:`` model's path made absolute behind its prefix."""
    if spec is None or "://" in spec or spec.startswith(("tfds:", "hf:")):
        return spec
    if spec.startswith("scratch:"):
        return "scratch:" + os.path.abspath(spec[len("scratch:") :])
    return os.path.abspath(spec) if os.path.exists(spec) or any(c in spec for c in "*?[") else spec


def as_path(path: PathSpec) -> AnyPath:
    """`path` as a path object: a `URLPath` for a URL, else ``pathlib.Path(path)`` (``file://``
    URLs become local paths)."""
    if isinstance(path, (URLPath, Path)):
        return path
    text = os.fspath(path)
    s = scheme(text)
    if s == "file":
        return Path(text[len("file://") :])
    return URLPath(text) if s is not None else Path(text)


def url_path(url: PathSpec) -> URLPath:
    """`url` as a `URLPath` (for what only an object store has: its filesystem, uploads);
    ValueError for a local path."""
    p = as_path(url)
    if not isinstance(p, URLPath):
        raise ValueError(f"not an object-store URL: {url}")
    return p


def local_path(path: PathSpec) -> Path:
    """`path` as a local ``pathlib.Path``; ValueError for an object-store URL."""
    p = as_path(path)
    if isinstance(p, URLPath):
        raise ValueError(f"not a local path: {path}")
    return p


def source(path: PathSpec) -> str | os.PathLike:
    """What to hand pandas / pyarrow readers that take paths or URLs: a local path unchanged, a
    URL as its string (both read URLs through fsspec)."""
    return str(path) if isinstance(path, URLPath) or is_url(path) else path


def read_parquet_table(path, **kwargs):
    """``pyarrow.parquet.read_table`` of a local path or a URL."""
    import pyarrow.parquet as pq

    if is_url(path):
        p = url_path(path)
        return pq.read_table(p.fs_path, filesystem=p.fs, **kwargs)
    return pq.read_table(path, **kwargs)


def append_text(path, text: str) -> None:
    """Append `text` to a file; on an object store (no appends) the object is rewritten whole."""
    if is_url(path):
        p = as_path(path)
        old = p.read_bytes() if p.is_file() else b""
        p.write_bytes(old + text.encode("utf-8"))
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def rmtree(path) -> None:
    """Remove a directory tree (every object below a URL prefix); nothing if it does not exist."""
    if is_url(path):
        p = url_path(path)
        if p.exists():
            p.fs.rm(p.fs_path, recursive=True)
        return
    shutil.rmtree(path, ignore_errors=True)


def move(src, dst) -> None:
    """Move a file or directory tree. Local: one ``os.replace``. Object store: copy, then delete
    the source (there is no rename; a kill in between leaves both, and repeating the move
    completes it)."""
    if is_url(src) != is_url(dst):
        raise PplawError(f"cannot move {src} to {dst}: one is local, the other is not")
    if not is_url(src):
        os.replace(src, dst)
        return
    s, d = url_path(src), url_path(dst)
    if s.is_dir():
        for f in s.rglob("*"):
            if f.is_file():
                s.fs.copy(f.fs_path, (d / str(f.relative_to(s))).fs_path)
        rmtree(s)
    else:
        s.fs.copy(s.fs_path, d.fs_path)
        s.unlink()


def upload_tree(local_dir: str | os.PathLike, url, skip_hidden: bool = False) -> list[str]:
    """Upload every file below `local_dir` to the same relative names below `url` (one upload per
    file); the relative names uploaded, sorted."""
    root, target = Path(local_dir), url_path(url)
    names = []
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root).as_posix()
        if f.is_file() and not (skip_hidden and any(p.startswith(".") for p in rel.split("/"))):
            (target / rel).upload(f)
            names.append(rel)
    return names


def download_tree(url, local_dir: str | os.PathLike) -> list[str]:
    """Download every object below `url` to the same relative names below `local_dir` (or the
    one object `url` names to ``local_dir/<name>``); the relative names, sorted."""
    src, root = url_path(url), Path(local_dir)
    root.mkdir(parents=True, exist_ok=True)
    if src.is_file():
        src.fs.get_file(src.fs_path, str(root / src.name))
        return [src.name]
    names = []
    for f in src.rglob("*"):
        if f.is_file():
            rel = str(f.relative_to(src))
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            f.fs.get_file(f.fs_path, str(root / rel))
            names.append(rel)
    return sorted(names)


@contextlib.contextmanager
def local_copy(path) -> Iterator[Path]:
    """A local file with `path`'s content for the duration of the block: the path itself when it
    is local, else a temporary download (for libraries that need a file name, e.g. netCDF)."""
    if not is_url(path):
        yield Path(path)
        return
    p = url_path(path)
    with tempfile.TemporaryDirectory(prefix="pplaw-download-") as d:
        local = Path(d) / p.name
        try:
            p.fs.get_file(p.fs_path, str(local))
        except FileNotFoundError:
            raise FileNotFoundError(f"no such object: {p}") from None
        yield local


def cache_root() -> Path:
    """``$PPLAW_CACHE``, default ``~/.cache/pplaw``: local copies of remote models and the local
    working copies of training runs whose ``--out`` is a URL."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "pplaw")


def url_key(url) -> str:
    """A short, stable name for a URL (for local working directories)."""
    return hashlib.sha256(str(url).encode()).hexdigest()[:16]


def localize(url) -> Path:
    """A local copy of the file or directory tree at `url`, in the content-addressed cache
    ``$PPLAW_CACHE/objects/<key>/<name>``; the key hashes the URL and each object's name, size and
    version (fsspec's ``ukey``: the generation / ETag on GCS and S3), so a changed object is a new
    copy and an unchanged one is downloaded once. A copy is assembled under a temporary name and
    renamed into place (local), so an interrupted download is never used."""
    src = url_path(url)
    if not src.exists():
        raise PplawError(f"{src}: no such object or prefix")
    files = [src] if src.is_file() else [f for f in src.rglob("*") if f.is_file()]
    if not files:
        raise PplawError(f"{src}: no objects below this prefix")
    listing = []
    for f in files:
        rel = "" if f is src else str(f.relative_to(src))
        listing.append([rel, f.stat().st_size, str(f.fs.ukey(f.fs_path))])
    key = hashlib.sha256(json.dumps([str(src), sorted(listing)]).encode()).hexdigest()[:24]
    final = cache_root() / "objects" / key
    target = final / (src.name or "object")
    if target.exists():
        return target
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=final.parent))
    try:
        download_tree(src, tmp / target.name if src.is_dir() else tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same copy first
            if not target.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
