"""The tensors of a `torch.save` file (a state dict, e.g. the Inception weights of torch-fidelity), read
without unpickling it.

A torch.save file describes its objects with a pickle; unpickling runs whatever the pickle names. Here the
pickle is only disassembled (pickletools.genops) and its opcodes are interpreted by a small stack machine
that knows a handful of names: dicts and OrderedDicts, tensors rebuilt from storages
(torch._utils._rebuild_tensor_v2, _rebuild_parameter) and the typed storage classes. Anything else is
refused with one line. Both layouts are read: the zip archive (torch >= 1.6: archive/data.pkl and one file
per storage) and the legacy stream (a sequence of pickles followed by the raw storages).
"""

from __future__ import annotations

import io
import pickletools
import struct
import zipfile

import torch

from .errors import ArtifactError

DTYPES = {  # storage class → dtype
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Global:
    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class _Mark:
    pass


def _rebuild_tensor(storage, offset, size, stride, *_):
    return storage.as_strided(tuple(size), tuple(stride), offset)


_CALLS = {  # the only callables the pickle may apply (REDUCE), by module.name
    "collections.OrderedDict": lambda *a: dict(*a),
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": lambda data, *_: data,
}


def _run(ops, storage, path: str):
    """Interpret pickle opcodes; `storage(pid)` returns the flat tensor a persistent id names."""
    stack, memo = [], {}

    def pop_mark():
        i = len(stack) - 1
        while not isinstance(stack[i], _Mark):
            i -= 1
        items = stack[i + 1:]
        del stack[i:]
        return items

    for op, arg, _ in ops:
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            return stack.pop()
        if name == "MARK":
            stack.append(_Mark())
        elif name in ("BININT", "BININT1", "BININT2", "LONG1", "LONG4", "BINFLOAT", "BINUNICODE", "SHORT_BINUNICODE",
                      "BINUNICODE8", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"):
            stack.append(arg)
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name in ("EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE"):
            stack.append({} if name == "EMPTY_DICT" else [] if name == "EMPTY_LIST" else ())
        elif name in ("BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            k = int(name[-1])
            items = tuple(stack[-k:])
            del stack[-k:]
            stack.append(items)
        elif name == "TUPLE":
            stack.append(tuple(pop_mark()))
        elif name == "LIST":
            stack.append(pop_mark())
        elif name == "DICT":
            items = pop_mark()
            stack.append(dict(zip(items[::2], items[1::2])))
        elif name == "APPEND":
            v = stack.pop()
            stack[-1].append(v)
        elif name == "APPENDS":
            items = pop_mark()
            stack[-1].extend(items)
        elif name == "SETITEM":
            v, k = stack.pop(), stack.pop()
            stack[-1][k] = v
        elif name == "SETITEMS":
            items = pop_mark()
            stack[-1].update(zip(items[::2], items[1::2]))
        elif name == "GLOBAL":
            module, _, attr = arg.partition(" ")
            stack.append(_Global(module, attr))
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            stack.append(_Global(module, attr))
        elif name == "BINPERSID":
            stack.append(storage(stack.pop()))
        elif name == "REDUCE":
            args, fn = stack.pop(), stack.pop()
            key = f"{fn.module}.{fn.name}" if isinstance(fn, _Global) else repr(fn)
            if key not in _CALLS:
                raise ArtifactError(f"{path}: holds a {key} object; udiff reads only state dicts of tensors "
                                    "(convert the file to .safetensors)")
            stack.append(_CALLS[key](*args))
        elif name == "BUILD":
            stack.pop()  # the state of an OrderedDict (its _metadata): not needed for the tensors
        else:
            raise ArtifactError(f"{path}: unsupported pickle opcode {name} in a torch.save file; convert it to "
                                ".safetensors")
    raise ArtifactError(f"{path}: truncated torch.save file (no STOP)")


def _dtype(storage_type, path):
    name = storage_type.name if isinstance(storage_type, _Global) else str(storage_type)
    if name not in DTYPES:
        raise ArtifactError(f"{path}: storage of unknown type {name}")
    return DTYPES[name]


def load_state(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict of tensors from a torch.save file (zip or legacy), never running its pickle."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({e.strerror})") from None
    try:
        state = _zip(raw, path) if zipfile.is_zipfile(io.BytesIO(raw)) else _legacy(raw, path)
    except ArtifactError:
        raise
    except Exception as e:  # a malformed pickle or archive
        raise ArtifactError(f"{path}: not a readable torch.save file ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ArtifactError(f"{path}: not a state dict (names → tensors)")
    return {k: v.clone() for k, v in state.items()}


def _zip(raw: bytes, path: str):
    zf = zipfile.ZipFile(io.BytesIO(raw))
    pkl = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
    if pkl is None:
        raise ArtifactError(f"{path}: a zip file without data.pkl; not a torch.save file")
    prefix = pkl[:-len("data.pkl")]
    cache = {}

    def storage(pid):
        _, storage_type, key, _location, numel = pid[:5]
        if key not in cache:
            data = bytearray(zf.read(f"{prefix}data/{key}"))
            cache[key] = torch.frombuffer(data, dtype=_dtype(storage_type, path)) if data else \
                torch.empty(0, dtype=_dtype(storage_type, path))
        return cache[key]

    return _run(pickletools.genops(zf.read(pkl)), storage, path)


def _legacy(raw: bytes, path: str):
    f = io.BytesIO(raw)
    magic = _run(pickletools.genops(f), None, path)
    if magic != LEGACY_MAGIC:
        raise ArtifactError(f"{path}: not a torch.save file (neither a zip archive nor the legacy format)")
    _run(pickletools.genops(f), None, path)  # protocol version
    _run(pickletools.genops(f), None, path)  # sys info
    types = {}

    def storage(pid):  # ('storage', type, key, location, numel, view): its bytes follow the pickles
        types[pid[2]] = pid[1]
        return _Deferred(pid[2])

    obj = _run(pickletools.genops(f), storage, path)
    keys = _run(pickletools.genops(f), None, path)
    flat = {}
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        dtype = _dtype(types[key], path)
        nbytes = numel * torch.empty(0, dtype=dtype).element_size()
        flat[key] = torch.frombuffer(bytearray(f.read(nbytes)), dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
    return {k: v.resolve(flat) if isinstance(v, _DeferredTensor) else v for k, v in obj.items()}


class _Deferred:
    """A legacy-format storage whose bytes come after the pickle."""

    def __init__(self, key):
        self.key = key

    def as_strided(self, size, stride, offset):
        return _DeferredTensor(self.key, size, stride, offset)


class _DeferredTensor:
    def __init__(self, key, size, stride, offset):
        self.key, self.size, self.stride, self.offset = key, size, stride, offset

    def resolve(self, flat):
        return flat[self.key].as_strided(self.size, self.stride, self.offset)
