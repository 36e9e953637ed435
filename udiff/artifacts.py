"""Artifacts: the safetensors files that pass from one udiff command to the next.

Every artifact is a plain safetensors file (never a pickle) whose string metadata says what it is:

    format          "pt" (what other safetensors tools look for)
    udiff.kind      model | checkpoint | samples | basis | classifier | noisy-classifier | stats
                    (a command refuses the wrong kind)
    udiff.format    integer version of this layout
    udiff.recipe    the full resolved recipe as canonical JSON (absent for artifacts without one)
    udiff.version   the udiff version that wrote it;  torch.version likewise
    udiff.sha256    digest of every tensor (name, dtype, shape, bytes): a corrupted file is refused
    udiff.meta_sha256  digest of every other metadata entry: an edited recipe is refused too
    udiff.*         further kind-specific entries (JSON strings)

Files are written to a temporary name beside the target and renamed when complete, so a failed or
interrupted command leaves no half-written output. The path "-" means stdout (writing) or stdin (reading).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .errors import ArtifactError

FORMAT = 2  # 2: [net] precond (format-1 networks predict epsilon; build.recipe_of reads them so)
KINDS = ("model", "checkpoint", "samples", "basis", "classifier", "noisy-classifier", "stats")
MAKERS = {  # how to make an artifact of each kind, for error messages
    "basis": "udiff fit-basis",
    "model": "udiff train",
    "checkpoint": "udiff train (it writes MODEL.ckpt.safetensors while training)",
    "samples": "udiff sample",
    "classifier": 'udiff train on a recipe with [net] kind = "classifier"',
    "noisy-classifier": 'udiff train on a recipe with [net] kind = "noisy-classifier"',
    "stats": "udiff eval-fid --save-ref",
}


@dataclass
class Artifact:
    """A loaded artifact: its kind, tensors (on the CPU) and string metadata."""

    kind: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, str] = field(default_factory=dict)
    path: str = "-"

    @property
    def recipe_json(self) -> Optional[str]:
        return self.meta.get("udiff.recipe")

    def json(self, key: str, default=None):
        """A JSON-valued metadata entry, parsed; `default` when absent."""
        if key not in self.meta:
            return default
        try:
            return json.loads(self.meta[key])
        except json.JSONDecodeError:
            raise ArtifactError(f"{self.path}: metadata {key} is not valid JSON; the file is corrupted") from None

    def require(self, *keys: str):
        """The named tensors, or a one-line error saying which one is missing."""
        missing = [k for k in keys if k not in self.tensors]
        if missing:
            raise ArtifactError(f"{self.path}: {self.kind} artifact lacks tensor {missing[0]!r}; "
                                f"re-create it with {MAKERS.get(self.kind, 'udiff')}")
        return [self.tensors[k] for k in keys]


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def to_bytes(tensors: dict[str, torch.Tensor], kind: str, recipe_json: Optional[str] = None,
             meta: Optional[dict[str, str]] = None) -> bytes:
    """Serialize tensors and metadata into safetensors bytes."""
    out, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().to("cpu").contiguous()
        if v.numel() and v.untyped_storage().data_ptr() in seen:  # safetensors refuses shared storage
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    tensors = out
    md = {
        "format": "pt",
        "udiff.kind": kind,
        "udiff.format": str(FORMAT),
        "udiff.version": __version__,
        "torch.version": torch.__version__.split("+")[0],
        "udiff.sha256": digest(tensors),
    }
    if recipe_json is not None:
        md["udiff.recipe"] = recipe_json
    for k, v in (meta or {}).items():
        md[k] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    md["udiff.meta_sha256"] = meta_digest(md)
    return st_save(tensors, metadata=md)


def meta_digest(md: dict[str, str]) -> str:
    """SHA-256 over every metadata entry but itself: an edited recipe or summary is refused like a corrupted
    tensor (the entry is absent from artifacts written before udiff 0.1 had it; they load unchecked)."""
    h = hashlib.sha256()
    for k in sorted(md):
        if k != "udiff.meta_sha256":
            h.update(json.dumps([k, md[k]]).encode())
    return h.hexdigest()


def save(path: str, tensors: dict[str, torch.Tensor], kind: str, recipe_json: Optional[str] = None,
         meta: Optional[dict[str, str]] = None) -> None:
    """Write an artifact atomically (temporary name + rename); "-" writes to stdout."""
    check_output(path)
    data = to_bytes(tensors, kind, recipe_json, meta)
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def from_bytes(data: bytes, path: str = "-", kind: str | Iterable[str] | None = None) -> Artifact:
    """Parse and verify artifact bytes; refuse corruption and the wrong kind with one line."""
    if len(data) < 8:
        raise ArtifactError(f"{path}: not a safetensors artifact (file is {len(data)} bytes); "
                            "expected a file written by udiff")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > 100_000_000:
        raise ArtifactError(f"{path}: not a safetensors artifact (bad header length); the file is "
                            "truncated or not written by udiff")
    try:
        header = json.loads(data[8:8 + n])
        md = header.get("__metadata__") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise ArtifactError(f"{path}: not a safetensors artifact (unreadable header); the file is "
                            "corrupted or not written by udiff") from None
    if "udiff.kind" not in md:
        raise ArtifactError(f"{path}: a safetensors file without udiff metadata; expected an artifact "
                            "written by udiff")
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error types for truncation and bad offsets
        raise ArtifactError(f"{path}: corrupted artifact ({str(e).splitlines()[0]}); re-create it") from None
    art = Artifact(kind=md["udiff.kind"], tensors=tensors, meta=dict(md), path=path)
    try:
        fmt = int(md.get("udiff.format", "0"))
    except ValueError:
        fmt = -1
    if fmt > FORMAT or fmt < 1:
        raise ArtifactError(f"{path}: artifact format {md.get('udiff.format')!r} is not one this udiff "
                            f"({__version__}) reads (format {FORMAT}); use a matching udiff version")
    if md.get("udiff.sha256") != digest(tensors):
        raise ArtifactError(f"{path}: corrupted artifact (its tensors do not match the stored SHA-256); "
                            "re-create it")
    if "udiff.meta_sha256" in md and md["udiff.meta_sha256"] != meta_digest(md):
        raise ArtifactError(f"{path}: corrupted or edited artifact (its metadata do not match the stored SHA-256); "
                            "re-create it (to change a recipe, retrain with --set, or use udiff show --recipe)")
    if kind is not None:
        wanted = (kind,) if isinstance(kind, str) else tuple(kind)
        if art.kind not in wanted:
            how = " or ".join(f"a {w!r} artifact (made by {MAKERS.get(w, 'udiff')})" for w in wanted)
            raise ArtifactError(f"{path}: is a {art.kind!r} artifact; expected {how}")
    return art


def read_bytes(path: str, what: str = "an artifact file") -> bytes:
    """The bytes of a file ("-" = stdin), with one-line errors for a missing or unreadable path."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a directory, expected {what}") from None
    except PermissionError:
        raise ArtifactError(f"{path}: permission denied") from None


def load(path: str, kind: str | Iterable[str] | None = None) -> Artifact:
    """Read and verify an artifact from a path ("-" = stdin); tensors stay on the CPU."""
    return from_bytes(read_bytes(path), path, kind)


def check_output(path: str) -> None:
    """Refuse, before any work, an output path that cannot be written: a directory, a path under a file, or
    "-" (stdout) when stdout is a terminal. A missing directory is fine: it is created when the output is."""
    if path == "-":
        if sys.stdout.isatty():
            raise ArtifactError("-o -: stdout is a terminal, and artifacts are binary; pipe it (-o - | udiff show -) "
                                "or give a file name")
        return
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise ArtifactError(f"{path}: is a directory; give a file name, e.g. {os.path.join(path, 'out')}"
                            f"{os.path.splitext(path)[1] or ''}")
    parent = _existing_ancestor(os.path.dirname(target))
    if not os.path.isdir(parent):
        raise ArtifactError(f"{path}: {parent} is a file, not a directory; choose another output path")
    if not os.access(parent, os.W_OK):
        raise ArtifactError(f"{path}: directory {parent} is not writable; choose another output path")


def _existing_ancestor(directory: str) -> str:
    while not os.path.exists(directory):
        directory = os.path.dirname(directory)
    return directory


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


def _clean_stale(directory: str, name: str) -> None:
    """Delete `.NAME.PID.*.tmp` files beside an output whose writing process is gone (a killed run)."""
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        m = _TMP.match(entry)
        if not m or m.group("name") != name or _alive(int(m.group("pid"))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, entry))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but is not ours
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside `path`; rename it onto `path` on success, delete it on failure."""
    with Outputs() as out:
        tmp = out.stage(path)
        yield tmp
        out.commit()


class Outputs:
    """Several output files that appear together or not at all.

    `stage(path)` checks the path (check_output) and returns a temporary path to write to, named
    `.NAME.PID.XXXX.tmp` in the output's directory (or, while that does not exist yet, in its nearest
    existing ancestor); `commit()` creates missing directories, gives every staged file the mode the umask
    asks for (mkstemp makes them 0600) and renames it onto its target; leaving the `with` block without
    commit (an error) deletes them all. Temporary files of killed runs are removed when the name is next
    written.
    """

    def __init__(self):
        self._staged: list[tuple[str, str]] = []

    def stage(self, path: str) -> str:
        check_output(path)
        target = os.path.abspath(path)
        if any(t == target for _, t in self._staged):
            raise ArtifactError(f"{path}: given for two outputs of one command; give each its own name")
        directory = _existing_ancestor(os.path.dirname(target))
        name = os.path.basename(target)
        _clean_stale(directory, name)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=directory)
        os.close(fd)
        self._staged.append((tmp, target))
        return tmp

    def commit(self):
        mode = 0o666 & ~_umask()
        for tmp, target in self._staged:
            check_output(target)  # still not a directory: fail before the first rename, not half-way
        for tmp, target in self._staged:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.chmod(tmp, mode)
            try:
                os.replace(tmp, target)
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                shutil.move(tmp, target)  # a missing directory on another file system than its ancestor
        self._staged = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._staged = []
        return False
