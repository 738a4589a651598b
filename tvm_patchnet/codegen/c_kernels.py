"""Plain C functions from the integer-only TE kernels, through TVM 0.27's C backend.

TVM 0.27 emits a *public* PrimFunc only behind the TVM-FFI packed ABI (argument type checks,
DLTensor unpacking, assert strings). A *private* PrimFunc (no ``global_symbol``) whose parameters
are pointers is emitted as a plain C function, ``void f(int8_t* x0, ...)``. So each kernel is:

1. a scheduled kernel PrimFunc (:mod:`tvm_patchnet.schedules`: the target's fast form, else the
   default schedule, which keeps per-element intermediates in ``local`` scope: one-element C
   arrays the compiler keeps in registers);
2. rewritten to pointer parameters (one ``T.decl_buffer`` per former buffer parameter) and made
   private;
3. lowered with TVM's default TIR pipeline (buffer compaction, flattening, ``StorageRewrite``,
   except for the patch stage, whose buffers the memory plan places one by one);
4. every remaining ``global`` allocation (the patch stage's per-patch buffers, row buffers of
   softmax) is turned into a view at a fixed byte offset of one extra parameter, ``uint8_t* ws``:
   the caller passes a region of its static arena. (Left alone, ``LowerTVMBuiltin`` keeps
   ``global`` buffers under 1 KiB as C arrays on the stack and turns every other allocation into
   ``TVMBackendAllocWorkspace`` calls, which it refuses for a private function: no device known.)
5. built by the C host codegen together with one empty public function (the codegen needs a
   public entry point), whose packed wrapper is dropped: only the private definitions are kept.

Why explicit ``ws`` views rather than a ``TVMBackendAllocWorkspace`` that returns planned arena
regions: offsets are fixed at compile time, so there are no calls, no NULL checks and no
allocation order to replay at run time (the patch stage would allocate and free its buffers
once per patch), and every byte is visible to the static planner. The patch stage's buffers
get the memory plan's offsets one by one (``ws`` is then the arena itself), so buffers with
disjoint lifetimes inside a patch share bytes, and in-place pairs share an offset.

In-place kernels (``depthwise_in_place_kernel``, ``accumulate_kernel``, and elementwise add /
mul, which read element k before writing it) may be called with the output pointer equal to an
input pointer: TVM's C has no ``restrict`` on the parameters, so the C compiler assumes they may
alias.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import tvm
import tvm_ffi
from tvm import tirx
from tvm.tirx.build import codegen_build
from tvm.tirx.transform.common import BufferReplacer

from ..errors import PatchnetError
from .float_literals import exact_float_literals

_TARGET = {"kind": "c"}


@dataclass
class CKernel:
    """One emitted C function. Sizes are bytes."""

    name: str
    source: str  # the definition, ``void name(...) { ... }``
    prototype: str  # ``void name(...);``
    workspace_bytes: int = 0
    #: hoisted buffers: name -> (offset in ws, bytes)
    workspace: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: ``local`` arrays left in the C function (scalars kept in registers or on the stack)
    local_bytes: int = 0
    #: micro-kernel definitions it calls (see ``schedules.default.KernelFunc.preamble``)
    preamble: tuple[str, ...] = ()


def _private_with_pointers(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with each buffer parameter replaced by a pointer and a ``decl_buffer`` on it,
    without ``global_symbol``: the C backend emits it as a plain C function."""
    ptrs = [tirx.Var(p.name, tvm.ir.PointerType(p.ty.dtype)) for p in func.params]
    decls = [tirx.DeclBuffer(p, data=q) for p, q in zip(func.params, ptrs)]
    return tirx.PrimFunc(ptrs, tirx.SeqStmt([*decls, func.body]), attrs=func.attrs).without_attr("global_symbol")


# ----------------------------------------------------------------------------- workspace
def _hoist_workspace(func: tirx.PrimFunc, placed: dict[str, int] | None = None
                     ) -> tuple[tirx.PrimFunc, dict[str, tuple[int, int]], int]:
    """Move the allocations of the lowered ``func`` out of TVM's allocator.

    ``global`` buffers become views at fixed offsets of a new last parameter ``ws``: packed one
    after the other, or at ``placed[buffer name]`` (the caller passes its arena as ``ws``); ``local``
    ones (the per-element scalars) become C arrays in the function, which the C compiler keeps
    in registers: TVM's C host codegen only emits ``global`` arrays, and only those under
    ``kMaxStackAlloca`` (1 KiB) without a workspace call. Returns the function, the views
    (name -> offset, bytes) and the bytes of the C arrays.
    """
    allocs: list = []
    tvm_ffi.structural_walk(func.body, (tirx.AllocBuffer, lambda n: allocs.append(n.buffer)))
    scalars = {b: tirx.decl_buffer(b.ty.shape, b.ty.dtype, b.name, scope="global") for b in allocs
               if b.scope() == "local"}
    local_bytes = sum(_nbytes(b) for b in scalars)
    if any(_nbytes(b) >= 1024 for b in scalars):
        raise PatchnetError(f"kernel has a 'local' buffer of 1 KiB or more: {[b.name for b in scalars]}")
    ws = tirx.Var("ws", tvm.ir.PointerType(tvm.ir.PrimType(tvm.DataType("uint8"))))
    views: dict[str, tuple[int, int]] = {}
    keep = set(scalars.values())
    top = 0

    def to_view(node):
        nonlocal top
        buf = node.buffer
        if buf in keep:
            return node
        if placed is None:  # packed, each buffer at its element size's alignment
            align = tvm.DataType(buf.ty.dtype).bits // 8
            off = -(-top // align) * align
        elif buf.name not in placed:
            raise PatchnetError(f"buffer '{buf.name}' of the lowered kernel has no place in the memory plan")
        else:
            off = placed[buf.name]
        if off % (tvm.DataType(buf.ty.dtype).bits // 8):
            raise PatchnetError(f"buffer '{buf.name}' ({buf.ty.dtype}) at offset {off} is misaligned")
        views[buf.name] = (off, _nbytes(buf))
        top = max(top, off + _nbytes(buf))
        return tirx.DeclBuffer(buf, data=tirx.ptr_byte_offset(ws, off, buf.ty.dtype))

    body = BufferReplacer(scalars)(func.body) if scalars else func.body
    body = tvm_ffi.structural_map(body, (tirx.AllocBuffer, to_view), order="post")
    params = [*func.params, ws] if views else list(func.params)
    return tirx.PrimFunc(params, body, attrs=func.attrs), views, local_bytes


def _nbytes(buf) -> int:
    if any(not isinstance(s, tirx.IntImm) for s in buf.ty.shape):
        raise PatchnetError(f"buffer '{buf.name}' has a dynamic size: no static arena offset possible")
    return int(np.prod([int(s) for s in buf.ty.shape], dtype=np.int64)) * tvm.DataType(buf.ty.dtype).bits // 8


# ----------------------------------------------------------------------------- build
def emit_kernels(funcs: dict[str, tirx.PrimFunc], placed: dict[str, dict[str, int]] | None = None,
                 preambles: dict[str, tuple[str, ...]] | None = None) -> dict[str, CKernel]:
    """Plain C of every scheduled kernel PrimFunc in ``funcs`` (C name -> func), one TVM build.
    ``placed[name]`` fixes the ``ws`` offsets of that kernel's buffers (by TIR buffer name); build
    placed kernels apart from the others (see the StorageRewrite note below). ``preambles[name]``:
    the micro-kernels that kernel calls (``schedules.default.KernelFunc.preamble``), carried to its ``CKernel``.

    Mirrors ``tvm.tirx.build`` (bind target, default TIR pipeline, host finalization, C codegen)
    with the workspace hoisting between the pipeline and the host passes.
    """
    target = tvm.target.Target(_TARGET)
    entry = tirx.PrimFunc([], tirx.Evaluate(0)).with_attr("global_symbol", "__patchnet_entry")
    mod = tvm.IRModule({"__patchnet_entry": entry, **{n: _private_with_pointers(f) for n, f in funcs.items()}})
    pipeline, finalize_host, _ = tirx.get_tir_pipeline("default")
    # With placements, StorageRewrite must not merge buffers by its own liveness: the memory
    # plan places each one. Without, it packs a kernel's row buffers (softmax) tighter.
    with tvm.transform.PassContext(config={"tirx.disable_storage_rewrite": bool(placed)}):
        mod = pipeline(tirx.transform.BindTarget(target.with_host(target))(mod))
    info = {}
    for name in funcs:
        f, views, local = _hoist_workspace(mod[name], (placed or {}).get(name))
        mod[name] = f
        info[name] = (views, local)
    src = codegen_build(finalize_host()(mod), target).inspect_source()
    out = {}
    for name, (views, local) in info.items():
        definition, signature = _extract(src, name)
        definition = exact_float_literals(definition, funcs[name], name)  # TVM prints 7 digits
        ws_bytes = max((o + b for o, b in views.values()), default=0)
        out[name] = CKernel(name, definition, signature + ";", ws_bytes, views, local,
                            (preambles or {}).get(name, ()))
    return out


def _extract(src: str, name: str) -> tuple[str, str]:
    """The definition of the private function ``name`` in the codegen output, without TVM's
    export macro, and its signature."""
    m = re.search(rf"^TVM_DLL (void {re.escape(name)}\([^)]*\)) \{{$", src, flags=re.MULTILINE)
    if m is None:
        raise PatchnetError(f"kernel '{name}': no plain C definition in TVM's output")
    depth, i = 0, m.end() - 1
    while True:  # the body holds no strings or comments: braces balance
        depth += {"{": 1, "}": -1}.get(src[i], 0)
        i += 1
        if depth == 0:
            break
    return m.group(1) + " " + src[m.end() - 1:i] + "\n", m.group(1)
