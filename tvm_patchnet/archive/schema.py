"""metadata.json's declared schema (version 4; version 3, without ``calls``, still reads): each
field's check, one line per problem."""

from __future__ import annotations

import json
import math
import os
import re

from .layout import (
    FORMAT,
    GRAPH_MEMBER,
    IO_DTYPES,
    IO_ITEMSIZE,
    MAX_IO,
    METADATA_VERSION,
    READABLE_VERSIONS,
    TARGET_BOARDS,
)


def _int(lo: int = 0, hi: int = 1 << 40):
    def check(v, where):
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            return [f"{where}: expected an integer in [{lo:,}, {hi:,}], got {_show(v)}"]
        return []

    return check


def _str(v, where):
    return [] if isinstance(v, str) and 0 < len(v) <= 4096 else [f"{where}: expected a non-empty string, got {_show(v)}"]


def _one_of(values):
    def check(v, where):
        return [] if v in values else [f"{where}: expected one of {', '.join(map(str, values))}, got {_show(v)}"]

    return check


def _number_or_null(v, where):
    ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0)
    return [] if ok else [f"{where}: expected a positive number or null, got {_show(v)}"]


def _int_or_null(v, where):
    return [] if v is None else _int(-(1 << 31), (1 << 31) - 1)(v, where)


def _shape(v, where):
    if (not isinstance(v, list) or not 1 <= len(v) <= 8
            or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 28 for d in v)
            or math.prod(v) > 1 << 28):
        return [f"{where}: expected a shape (1 to 8 dimensions, each >= 1, at most 2^28 elements), got {_show(v)}"]
    return []


def _obj(fields: dict, extra: bool = True):
    def check(v, where):
        if not isinstance(v, dict):
            return [f"{where}: expected an object, got {_show(v)}"]
        out = [f"{where}.{k}: missing" for k in fields if k not in v]
        out += [p for k, f in fields.items() if k in v for p in f(v[k], f"{where}.{k}")]
        if not extra:
            out += [f"{where}.{k}: unknown field" for k in v if k not in fields]
        return out

    return check


def _nullable(f):
    return lambda v, where: [] if v is None else f(v, where)


def _list_of(f, most: int = 1 << 16, least: int = 0):
    def check(v, where):
        if not isinstance(v, list) or not least <= len(v) <= most:
            return [f"{where}: expected a list ({least:,} to {most:,} entries), got {_show(v)}"]
        return [p for i, x in enumerate(v) for p in f(x, f"{where}[{i}]")]

    return check


#: how a float model's activations were calibrated: "random" (seeded normal samples) or the file or
#: folder the user passed (its name), and how many samples
_CALIBRATION = _nullable(_obj({"source": _str, "samples": _int(1, 1 << 20)}))


def _source(v, where):
    """What was compiled: a model file (``src/model.tflite`` / ``.onnx``), a built-in name, or an
    int8 graph (``src/graph.npz``: a float model quantized on calibration data, or a graph quantized
    in Python), with optional ``calibration``."""
    if not isinstance(v, dict):
        return [f"{where}: expected an object, got {_show(v)}"]
    out = []
    if "graph" in v and v["graph"] != GRAPH_MEMBER:
        out.append(f"{where}.graph: expected {GRAPH_MEMBER}, got {_show(v['graph'])}")
    if "calibration" in v:
        out += _CALIBRATION(v["calibration"], f"{where}.calibration")
    if "file" in v:
        ok = v["file"] in ("src/model.tflite", "src/model.onnx")
        bad = f"{where}.file: expected src/model.tflite or src/model.onnx, got {_show(v['file'])}"
        return out + ([] if ok else [bad])
    if "graph" in v:
        return out
    return out + _obj({"builtin": _str, "resolution": _nullable(_int(1, 1 << 16)), "width": _number_or_null})(v, where)


def _io_schema():
    """The model's inputs or outputs, in order: each one's name, shape, dtype (int8 or float32)
    and quantization (null for float32)."""
    return _list_of(_obj({"name": _str, "shape": _shape, "dtype": _one_of(IO_DTYPES), "scale": _number_or_null,
                          "zero_point": _int_or_null}), most=MAX_IO, least=1)


def _boards():
    return sorted({b for boards in TARGET_BOARDS.values() for b in boards})


_FIELDS_V3 = {
    "format": _one_of((FORMAT,)),
    "version": _one_of((3,)),
    "model": _str,
    "target": _one_of(tuple(TARGET_BOARDS)),
    "board": _one_of(tuple(_boards())),
    "arena_bytes": _int(1, 1 << 31),
    "weight_bytes": _int(0, 1 << 31),
    "inputs": _io_schema(),
    "outputs": _io_schema(),
    "planner": _one_of(("greedy", "milp")),
    "arena_lower_bound_bytes": _int(0, 1 << 31),
    "allocations": _list_of(_obj({"name": _str, "offset": _int(0, 1 << 31), "bytes": _int(0, 1 << 31),
                                  "first_op": _int(-1, 1 << 20), "last_op": _int(-1, 1 << 20)})),
    "kernels": _int(0, 1 << 20),
    "profile": _obj({"peak_bytes": _int(0, 1 << 40), "peak_bytes_no_inplace": _int(0, 1 << 40),
                     "total_macs": _int(0, 1 << 50)}),
    "patch": _nullable(_obj({"patches": _int(2, 64), "split": _int(1, 1 << 10), "peak_bytes": _int(0, 1 << 40),
                             "total_macs_patched": _int(0, 1 << 50)})),
    "source": _source,
}
#: the kernel calls of one run, in order: the step's name, the C kernel it calls (shared by steps
#: lowered to the same code), the graph ops it runs and their MACs (a patch stage's with its overlap)
_CALLS = _list_of(_obj({"name": _str, "kernel": _str, "ops": _list_of(_str, most=1 << 16, least=1),
                        "macs": _int(0, 1 << 50)}), most=1 << 16)
#: metadata.json, version 4: field -> check(value, where) -> list of problems (one line each).
SCHEMA = _obj({**_FIELDS_V3, "version": _one_of((METADATA_VERSION,)), "calls": _CALLS})
#: version 3 (before "calls"): still run, without --profile
SCHEMA_V3 = _obj(_FIELDS_V3)


def validate_metadata(meta) -> list[str]:
    """Problems of a metadata.json (one line each), [] when it is valid."""
    if not isinstance(meta, dict):
        return [f"metadata: expected an object, got {_show(meta)}"]
    if meta.get("format") != FORMAT or meta.get("version") not in READABLE_VERSIONS:
        got = f"{_show(meta.get('format'))} version {_show(meta.get('version'))}"
        return [(f"format/version: expected {FORMAT!r} version {METADATA_VERSION} (or 3), got {got} "
                "(recompile with this patchnet)")]
    problems = (SCHEMA if meta["version"] == METADATA_VERSION else SCHEMA_V3)(meta, "metadata")
    if not problems:
        board_ok = meta["board"] in TARGET_BOARDS[meta["target"]]
        problems += [] if board_ok else [f"metadata.board: {meta['board']} is not a {meta['target']} board"]
        problems += [f"metadata.allocations[{i}]: ends at {a['offset'] + a['bytes']:,} B, beyond arena_bytes "
                     f"{meta['arena_bytes']:,}" for i, a in enumerate(meta["allocations"])
                     if a["offset"] + a["bytes"] > meta["arena_bytes"]]
    return problems


_DEFINE = re.compile(r"^\s*#\s*define\s+(TVMGEN_(?:INPUT_BYTES|OUTPUT_BYTES|ARENA_BYTES|NUM_INPUTS|NUM_OUTPUTS|NUM_CALLS))"
                     r"\s+(\d+)\s*$", re.MULTILINE)
_TABLE = re.compile(r"^\s*#\s*define\s+(TVMGEN_(?:INPUT|OUTPUT)_SIZES)\s+\{([\d,\s]*)\}\s*$", re.MULTILINE)


def declared_sizes(codegen_dir: str) -> dict[str, int | list[int]]:
    """What ``model.h`` in ``codegen_dir`` defines: TVMGEN_INPUT/OUTPUT/ARENA_BYTES (bytes),
    TVMGEN_NUM_INPUTS/OUTPUTS/CALLS, TVMGEN_INPUT/OUTPUT_SIZES (a list of bytes per tensor)."""
    try:
        with open(os.path.join(codegen_dir, "model.h"), errors="replace") as f:
            text = f.read()
    except OSError:
        return {}
    out: dict[str, int | list[int]] = {k: int(v) for k, v in _DEFINE.findall(text)}
    out.update({k: [int(x) for x in v.replace(",", " ").split()] for k, v in _TABLE.findall(text)})
    return out


def io_bytes(entry: dict) -> int:
    """Bytes of one ``inputs`` / ``outputs`` entry of metadata.json."""
    return math.prod(entry["shape"]) * IO_ITEMSIZE[entry["dtype"]]


def check_declared_sizes(meta: dict, into: str) -> list[str]:
    """metadata.json against the code it ships: a lying size is caught before any build."""
    declared = declared_sizes(os.path.join(into, "codegen", "host", "src"))
    ins, outs = [io_bytes(e) for e in meta["inputs"]], [io_bytes(e) for e in meta["outputs"]]
    want = {"TVMGEN_NUM_INPUTS": ("inputs", len(ins), "input(s)"),
            "TVMGEN_NUM_OUTPUTS": ("outputs", len(outs), "output(s)"),
            "TVMGEN_INPUT_SIZES": ("inputs", ins, "B"), "TVMGEN_OUTPUT_SIZES": ("outputs", outs, "B"),
            "TVMGEN_INPUT_BYTES": ("inputs", sum(ins), "B"), "TVMGEN_OUTPUT_BYTES": ("outputs", sum(outs), "B"),
            "TVMGEN_ARENA_BYTES": ("arena_bytes", meta["arena_bytes"], "B")}
    if "calls" in meta:
        want["TVMGEN_NUM_CALLS"] = ("calls", len(meta["calls"]), "call(s)")
    out = []
    for define, (field, n, unit) in want.items():
        if define not in declared:
            out.append(f"codegen/host/src/model.h: no '#define {define}'")
        elif declared[define] != n:
            out.append(f"metadata.{field}: {_amount(n)} {unit}, but model.h defines {define} "
                       f"{_amount(declared[define])}")
    for key in ("file", "graph"):
        src = meta["source"].get(key)
        if src and not os.path.isfile(os.path.join(into, src)):
            out.append(f"metadata.source.{key}: {src} is not in the archive")
    return out


def _amount(n) -> str:
    return "{" + ", ".join(f"{x:,}" for x in n) + "}" if isinstance(n, list) else f"{n:,}"


def _show(v) -> str:
    text = json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else str(v)
    return text if len(text) <= 60 else text[:57] + "..."
