"""Seeded mutations of .tflite flatbuffers, made by editing the bytes in place.

:func:`find_sites` walks a model with the ``tflite`` package and records where each field the
importer reads is stored (absolute byte offset and ``struct`` format): quantization scales and
zero points, quantized dimensions, shape dimensions, tensor types and buffer indices, buffer
data lengths, op / subgraph tensor indices, op code indices and op options. A field that the
writer left at its schema default is not in the file, so it has no site. :func:`mutants` then
draws structured edits of those sites (scale 0 / NaN / inf, zero points out of range, dims 0 /
negative / huge, buffer lengths off by some bytes...) mixed with truncations, bit flips and
random byte runs, all from one ``numpy.random.Generator``.

Table slots are the schema's: field ``k`` of a table sits at vtable offset ``4 + 2 * k``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import tflite

#: vtable slots (bytes) of the fields used here, as in the generated ``tflite`` accessors
_TENSOR = {"shape": 4, "type": 6, "buffer": 8, "quantization": 12}
_QUANT = {"scale": 8, "zero_point": 10, "quantized_dimension": 16}
_OPTIONS = {
    "Conv2DOptions": {"padding": (4, "<b"), "stride_w": (6, "<i"), "stride_h": (8, "<i"), "act": (10, "<b"),
                      "dilation_w": (12, "<i"), "dilation_h": (14, "<i")},
    "DepthwiseConv2DOptions": {"padding": (4, "<b"), "stride_w": (6, "<i"), "stride_h": (8, "<i"),
                               "depth_multiplier": (10, "<i"), "act": (12, "<b"), "dilation_w": (14, "<i"),
                               "dilation_h": (16, "<i")},
    "Pool2DOptions": {"padding": (4, "<b"), "stride_w": (6, "<i"), "stride_h": (8, "<i"),
                      "filter_w": (10, "<i"), "filter_h": (12, "<i"), "act": (14, "<b")},
    "FullyConnectedOptions": {"act": (4, "<b"), "keep_num_dims": (8, "<b")},
    "SoftmaxOptions": {"beta": (4, "<f")},
    "ConcatenationOptions": {"axis": (4, "<i"), "act": (6, "<b")},
    "AddOptions": {"act": (4, "<b")},
}
_OPTION_NAMES = {v: k for k, v in tflite.BuiltinOptions.__dict__.items() if not k.startswith("_")}


@dataclass(frozen=True)
class Site:
    """One stored field: ``kind``, absolute byte offset ``pos``, ``struct`` format ``fmt``.

    ``tensor`` / ``op`` give the index of the tensor or op the field belongs to (-1: none);
    ``value`` is the value stored in the unmutated file.
    """

    kind: str
    pos: int
    fmt: str
    tensor: int = -1
    op: int = -1
    value: float | int = 0


def _field(tab, slot: int) -> int:
    """Absolute position of a scalar field, or 0 when the file does not store it."""
    o = tab.Offset(slot)
    return tab.Pos + o if o else 0


def _vector(tab, slot: int) -> tuple[int, int]:
    """(position of element 0, length) of a vector field, or (0, 0) when absent."""
    o = tab.Offset(slot)
    return (tab.Vector(o), tab.VectorLen(o)) if o else (0, 0)


def find_sites(buf: bytes) -> list[Site]:
    """Every mutable field of subgraph 0 of the model in ``buf``."""
    model = tflite.Model.GetRootAsModel(buf, 0)
    sg = model.Subgraphs(0)
    sites: list[Site] = []

    def add(kind, pos, fmt, tensor=-1, op=-1):
        if pos:
            sites.append(Site(kind, pos, fmt, tensor, op, struct.unpack_from(fmt, buf, pos)[0]))

    def add_vector(kind, tab, slot, fmt, tensor=-1, op=-1):
        start, n = _vector(tab, slot)
        for j in range(n):
            add(kind, start + j * struct.calcsize(fmt), fmt, tensor, op)

    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        add_vector("dim", t._tab, _TENSOR["shape"], "<i", tensor=i)
        add("type", _field(t._tab, _TENSOR["type"]), "<b", tensor=i)
        add("buffer_index", _field(t._tab, _TENSOR["buffer"]), "<I", tensor=i)
        q = t.Quantization()
        if q is not None:
            add_vector("scale", q._tab, _QUANT["scale"], "<f", tensor=i)
            add_vector("zero_point", q._tab, _QUANT["zero_point"], "<q", tensor=i)
            add("quant_dim", _field(q._tab, _QUANT["quantized_dimension"]), "<i", tensor=i)
        b = model.Buffers(t.Buffer())
        start, n = _vector(b._tab, 4)
        if n:
            add("data_len", start - 4, "<I", tensor=i)
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        add("opcode_index", _field(op._tab, 4), "<I", op=i)
        add_vector("op_input", op._tab, 6, "<i", op=i)
        add_vector("op_output", op._tab, 8, "<i", op=i)
        table = _OPTION_NAMES.get(op.BuiltinOptionsType())
        opts = op.BuiltinOptions()
        for field, (slot, fmt) in _OPTIONS.get(table, {}).items() if opts is not None else ():
            add(f"option:{field}", _field(opts, slot), fmt, op=i)
    add_vector("sg_input", sg._tab, 6, "<i")
    add_vector("sg_output", sg._tab, 8, "<i")
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        add("builtin_code", _field(oc._tab, 10), "<i")
        add("deprecated_code", _field(oc._tab, 4), "<b")
    return sites


def set_field(buf: bytearray, site: Site, value) -> None:
    """Store ``value`` at ``site``, wrapped to the field's width (so 2**31 in an int32 is negative)."""
    size = struct.calcsize(site.fmt)
    if site.fmt == "<f":
        struct.pack_into("<f", buf, site.pos, float(value))
        return
    raw = int(value) & ((1 << (8 * size)) - 1)
    buf[site.pos:site.pos + size] = raw.to_bytes(size, "little")


def _values(site: Site, rng: np.random.Generator, n_tensors: int) -> list:
    """Candidate replacement values for ``site``: invalid ones and plausible ones."""
    v = site.value
    if site.kind == "scale":
        return [0.0, -0.0, math.nan, math.inf, -math.inf, -abs(v or 1.0), 1e-45, 3e38, float(rng.lognormal(-4, 2))]
    if site.kind == "zero_point":
        return [128, -129, 255, 1 << 31, -(1 << 40), 0, int(rng.integers(-128, 128))]
    if site.kind == "quant_dim":
        return [-1, 1, 3, 4, 100, (1 << 31) - 1]
    if site.kind == "dim":
        return [0, -1, -5, 1 << 30, (1 << 31) - 1, v + 1, max(v - 1, 0), 2 * v, int(rng.integers(1, 65))]
    if site.kind == "type":
        return [-1, 0, 1, 2, 3, 5, 6, 9, 10, 16, 100]
    if site.kind == "data_len":
        return [0, v - 1, v // 2, v + 1, 2 * v, 1 << 31]
    if site.kind in ("buffer_index", "opcode_index"):
        return [1 << 31, (1 << 32) - 1, 100_000, 0, int(rng.integers(0, 64))]
    if site.kind in ("op_input", "op_output", "sg_input", "sg_output"):
        return [-1, -2, n_tensors, (1 << 31) - 1, int(rng.integers(0, n_tensors))]
    if site.kind == "option:beta":
        return [math.nan, math.inf, 0.0, -1.0, 1e30]
    if site.fmt == "<b":
        return [-1, 0, 1, 2, 3, 5, 100]
    return [0, -1, -7, 2, 3, 1000, (1 << 31) - 1, int(rng.integers(1, 9))]


@dataclass
class Mutant:
    """A mutated model: its bytes and a description such as ``dim 3 of tensor 12 := -1``."""

    data: bytes
    what: str


def mutants(models: dict[str, bytes], count: int, seed: int) -> Iterator[tuple[str, Mutant]]:
    """``count`` (model name, mutant) pairs drawn from ``models`` with generator ``seed``.

    About 60% are structured edits of one site, the rest truncations (10%), flips of 1-8 random
    bits (20%) and overwrites of 2-16 bytes with random bytes (10%).
    """
    rng = np.random.default_rng(seed)
    names = sorted(models)
    sites = {n: find_sites(models[n]) for n in names}
    tensors = {n: tflite.Model.GetRootAsModel(models[n], 0).Subgraphs(0).TensorsLength() for n in names}
    for _ in range(count):
        name = names[rng.integers(len(names))]
        src = models[name]
        buf = bytearray(src)
        r = rng.random()
        if r < 0.6:
            kinds = sorted({s.kind for s in sites[name]})
            kind = kinds[rng.integers(len(kinds))]
            pool = [s for s in sites[name] if s.kind == kind]
            site = pool[rng.integers(len(pool))]
            values = _values(site, rng, tensors[name])
            value = values[rng.integers(len(values))]
            set_field(buf, site, value)
            what = f"{kind} at {site.pos} (tensor {site.tensor}, op {site.op}) := {value!r}"
        elif r < 0.7:
            cut = int(rng.integers(8, len(src)))
            buf = buf[:cut]
            what = f"truncated to {cut} bytes"
        elif r < 0.9:
            bits = rng.integers(0, 8 * len(src), size=int(rng.integers(1, 9)))
            for b in bits:
                buf[b // 8] ^= 1 << (b % 8)
            what = f"bits {sorted(int(b) for b in bits)} flipped"
        else:
            n = int(rng.integers(2, 17))
            at = int(rng.integers(8, len(src) - n))
            buf[at:at + n] = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
            what = f"{n} random bytes at {at}"
        yield name, Mutant(bytes(buf), what)


def mutate(buf: bytes, kind: str, value, tensor: int | None = None, index: int = 0) -> tuple[bytes, Site]:
    """``buf`` with the ``index``-th site of ``kind`` (of ``tensor`` if given) set to ``value``."""
    pool = [s for s in find_sites(buf) if s.kind == kind and (tensor is None or s.tensor == tensor)]
    site = pool[index]
    out = bytearray(buf)
    set_field(out, site, value)
    return bytes(out), site
