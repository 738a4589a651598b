"""``src/graph.npz``: the int8 graph an archive's C was built from, for ``run --check``.

Written for graphs that cannot be rebuilt from a model file alone: ONNX / PyTorch models
quantized on calibration data, and graphs quantized in Python (``compile_model(graph)``). The
file is an uncompressed NumPy ``.npz`` (never pickled): ``graph.json`` (UTF-8 JSON as uint8:
name, inputs, outputs, tensors, ops) and arrays ``a0``, ``a1``, ... (scales, zero points,
constant data, array attributes). Attribute values keep their Python / NumPy types exactly
(tuples, NumPy scalars), so the loaded graph computes what the saved one did.

An archive is untrusted: :func:`load_graph` reads only those members, caps their sizes, checks
every field's type and then :meth:`Graph.validate` (tensors, quantization, op geometry); any
problem is one :class:`PatchnetError` line naming the file.
"""

from __future__ import annotations

import json
import re
import zipfile

import numpy as np

from ..errors import PatchnetError
from ..graph import Graph, Op, Tensor
from .layout import GRAPH_MEMBER, MAX_BYTES

GRAPH_FORMAT = "tvm-patchnet int8 graph"
GRAPH_VERSION = 1
_ENTRY = re.compile(r"graph\.json\.npy|a\d{1,6}\.npy")
_DTYPES = ("int8", "uint8", "int16", "int32", "int64", "float32", "float64", "bool")
MAX_JSON_BYTES = 64 << 20


def save_graph(graph: Graph, path: str) -> None:
    """Write ``graph`` to ``path`` (an ``.npz``)."""
    arrays: list[np.ndarray] = []

    def arr(a) -> int | None:
        if a is None:
            return None
        arrays.append(np.ascontiguousarray(a))
        return len(arrays) - 1

    tensors = [{"name": t.name, "shape": [int(d) for d in t.shape], "dtype": t.dtype, "scale": arr(t.scale),
                "zero_point": arr(t.zero_point), "quant_axis": int(t.quant_axis), "data": arr(t.data),
                "const": bool(t.const)} for t in graph.tensors.values()]
    ops = [{"name": op.name, "kind": op.kind, "inputs": list(op.inputs), "outputs": list(op.outputs),
            "attrs": {k: _encode(v, arr) for k, v in op.attrs.items()}, "block": int(op.block), "origin": op.origin}
           for op in graph.ops]
    head = {"format": GRAPH_FORMAT, "version": GRAPH_VERSION, "name": graph.name, "inputs": list(graph.inputs),
            "outputs": list(graph.outputs), "tensors": tensors, "ops": ops}
    blob = np.frombuffer(json.dumps(head).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **{"graph.json": blob}, **{f"a{i}": a for i, a in enumerate(arrays)})


def _encode(v, arr):
    """An attribute value as JSON that :func:`_decode` turns back into the same value and type."""
    if v is None or isinstance(v, (bool, str)) or type(v) in (int, float):
        return v
    if isinstance(v, tuple):
        return {"tuple": [_encode(x, arr) for x in v]}
    if isinstance(v, list):
        return [_encode(x, arr) for x in v]
    if isinstance(v, dict):
        return {"dict": {str(k): _encode(x, arr) for k, x in v.items()}}
    if isinstance(v, np.generic):
        return {"scalar": v.dtype.name, "value": v.item()}
    if isinstance(v, np.ndarray):
        return {"array": arr(v)}
    if isinstance(v, (int, float)):  # subclasses (IntEnum, ...): their plain value
        return _encode(int(v) if isinstance(v, int) else float(v), arr)
    raise PatchnetError(f"cannot store attribute value {v!r} ({type(v).__name__}) of the int8 graph")


def load_graph(path: str, label: str = GRAPH_MEMBER) -> Graph:
    """The validated :class:`Graph` stored at ``path``; ``label`` names it in messages."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            bad = next((i.filename for i in infos if not _ENTRY.fullmatch(i.filename)), None)
            if bad is not None:
                raise PatchnetError(f"{label}: unexpected entry {bad!r}; not a patchnet int8 graph")
            if sum(i.file_size for i in infos) > MAX_BYTES or len(infos) > 1 << 16:
                raise PatchnetError(f"{label}: more than {MAX_BYTES:,} B or 65,536 arrays; refused")
        with np.load(path, allow_pickle=False) as npz:
            raw = npz["graph.json"]
            if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > MAX_JSON_BYTES:
                raise PatchnetError(f"{label}: graph.json is not a byte string of at most {MAX_JSON_BYTES:,} B")
            head = json.loads(raw.tobytes().decode())
            arrays = {k: npz[k] for k in npz.files if k != "graph.json"}
        return _build(head, arrays, label)
    except PatchnetError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError,
            zipfile.BadZipFile, UnicodeDecodeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PatchnetError(f"{label}: not a valid patchnet int8 graph ({why})") from None


def _build(head, arrays: dict, label: str) -> Graph:
    if not isinstance(head, dict) or head.get("format") != GRAPH_FORMAT or head.get("version") != GRAPH_VERSION:
        raise PatchnetError(f"{label}: not a '{GRAPH_FORMAT}' version {GRAPH_VERSION} file")

    def array(i):
        if i is None:
            return None
        if not isinstance(i, int) or isinstance(i, bool) or f"a{i}" not in arrays:
            raise PatchnetError(f"{label}: array reference {i!r} is not in the file")
        a = arrays[f"a{i}"]
        if a.dtype.name not in _DTYPES:
            raise PatchnetError(f"{label}: array a{i} has dtype {a.dtype}")
        return a

    def string(v, what):
        if not isinstance(v, str) or len(v) > 4096:
            raise PatchnetError(f"{label}: {what} is not a string")
        return v

    tensors = {}
    for t in _list(head["tensors"], label, "tensors"):
        name = string(t["name"], "a tensor name")
        if t["dtype"] not in _DTYPES or not isinstance(t["quant_axis"], int) or not isinstance(t["const"], bool):
            raise PatchnetError(f"{label}: tensor '{name}' has an invalid dtype, quant_axis or const flag")
        shape = tuple(_list(t["shape"], label, f"tensor '{name}' shape"))
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape) or name in tensors:
            raise PatchnetError(f"{label}: tensor '{name}' has an invalid shape or appears twice")
        tensors[name] = Tensor(name, shape, t["dtype"], array(t["scale"]), array(t["zero_point"]), t["quant_axis"],
                               array(t["data"]), t["const"])
    ops = []
    for o in _list(head["ops"], label, "ops"):
        name = string(o["name"], "an op name")
        attrs = o["attrs"]
        if not isinstance(attrs, dict) or not isinstance(o["block"], int):
            raise PatchnetError(f"{label}: op '{name}' has invalid attributes or block")
        ops.append(Op(name, string(o["kind"], "an op kind"),
                      [string(n, "an op input") for n in _list(o["inputs"], label, "op inputs")],
                      [string(n, "an op output") for n in _list(o["outputs"], label, "op outputs")],
                      {string(k, "an attribute name"): _decode(v, array) for k, v in attrs.items()},
                      o["block"], string(o["origin"], "an op origin")))
    g = Graph(string(head["name"], "the graph name"), tensors, ops,
              [string(n, "an input") for n in _list(head["inputs"], label, "inputs")],
              [string(n, "an output") for n in _list(head["outputs"], label, "outputs")], {"source": label})
    g.validate()
    return g


def _list(v, label: str, what: str) -> list:
    if not isinstance(v, list):
        raise PatchnetError(f"{label}: {what} is not a list")
    return v


def _decode(v, array):
    if isinstance(v, list):
        return [_decode(x, array) for x in v]
    if not isinstance(v, dict):
        return v
    if "tuple" in v:
        return tuple(_decode(x, array) for x in v["tuple"])
    if "dict" in v:
        return {k: _decode(x, array) for k, x in v["dict"].items()}
    if "scalar" in v:
        if v["scalar"] not in _DTYPES:
            raise ValueError(f"attribute scalar of dtype {v['scalar']!r}")
        return np.dtype(v["scalar"]).type(v["value"])
    if "array" in v:
        return array(v["array"])
    raise ValueError(f"unknown attribute encoding {sorted(v)}")
