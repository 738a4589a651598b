"""Plain C functions from the integer-only TE kernels, through TVM 0.27's C backend.

TVM 0.27 emits a *public* PrimFunc only behind the TVM-FFI packed ABI (argument type checks,
DLTensor unpacking, assert strings). A *private* PrimFunc (no ``global_symbol``) whose parameters
are pointers is emitted as a plain C function, ``void f(int8_t* x0, ...)``. So each kernel is:

1. the op's TE kernel as a PrimFunc (``te.create_prim_func``), scheduled so that every
   intermediate that one output element needs alone (conv/pool accumulators, requantization
   steps) is computed right before that element in ``local`` scope: a one-element C array the
   compiler keeps in a register, not a buffer;
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
from dataclasses import dataclass, field, replace

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir, te, tirx
from tvm.tirx.build import codegen_build
from tvm.tirx.transform.common import BufferReplacer

from ..analysis.liveness import plane_hw
from ..errors import PatchnetError
from ..graph import Graph, Op
from ..kernels import lower_op
from ..patch.planner import PatchPlan
from ..patch.stage import build_stage
from .float_literals import exact_float_literals

_TARGET = {"kind": "c"}


@dataclass
class KernelFunc:
    """A scheduled kernel PrimFunc (buffer parameters) and what its parameters are bound to:
    activation tensor names or NumPy constants, in parameter order; the last one is the output."""

    func: tirx.PrimFunc
    args: list
    #: C definitions (``static inline`` micro-kernels) the emitted function calls, each a whole text
    preamble: tuple[str, ...] = ()


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
    #: micro-kernel definitions it calls (see ``KernelFunc.preamble``)
    preamble: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- PrimFuncs
def _placeholders(graph: Graph, args: list) -> list:
    """TE placeholders for a lowering's arguments (activations by tensor, constants by array)."""
    phs = []
    for k, a in enumerate(args):
        if isinstance(a, str):
            t = graph.t(a)
            phs.append(te.placeholder(t.shape, t.dtype, name=f"x{k}"))
        else:
            phs.append(te.placeholder(a.shape, str(a.dtype), name=f"w{k}"))
    return phs


def op_kernel(graph: Graph, op: Op, schedules=None) -> KernelFunc:
    """The TE kernel of ``op`` as a PrimFunc: a fast variant from ``schedules``
    (:mod:`tvm_patchnet.schedules`) where one applies, else the default schedule, intermediates
    in registers where possible."""
    fast = schedules.op_kernel(graph, op) if schedules else None
    if fast is not None:
        return fast
    low = lower_op(graph, op)
    phs = _placeholders(graph, low.args)
    out = low.compute(*phs)
    sch = s_tir.Schedule(te.create_prim_func([*phs, out]))
    if op.kind == "softmax":
        _rows(sch, len(graph.t(op.outputs[0]).shape) - 1)
    elif op.kind == "logistic":  # elementwise: every step of one element in registers
        _rows(sch, len(graph.t(op.outputs[0]).shape))
    else:
        _inline_copies(sch)
        _intermediates_in_registers(sch)
    return KernelFunc(_init_outside_reductions(sch), [*low.args, op.outputs[0]])


def _inline_copies(sch: s_tir.Schedule) -> None:
    """Inline blocks that only move elements (a fully connected layer's flattened input view)."""
    for blk in sch.get_child_blocks(sch.get_sblock("root"))[:-1]:
        body = sch.get(blk).body
        if isinstance(body, tirx.BufferStore) and isinstance(body.value, tvm.ir.TensorLoad) and \
                all(int(iv.iter_type) == 0 for iv in sch.get(blk).iter_vars):
            sch.compute_inline(blk)


def _rows(sch: s_tir.Schedule, row_dims: int) -> None:
    """One row at a time: every intermediate computed under the output's row loop, per-row values
    (softmax's max, sum, reciprocal) in registers, per-element values in row buffers (softmax's
    are read by the sum and again by the output). ``row_dims``: the leading axes that index a
    row (all of them: one element at a time, every value in registers)."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    out = blocks[-1]
    full = [int(s) for s in sch.get(out).writes[0].source.ty.shape]
    for blk in reversed(blocks[:-1]):  # consumers first
        sch.compute_at(blk, sch.get_loops(out)[row_dims - 1], preserve_unit_loops=True)
        if row_dims == len(full) or [int(s) for s in sch.get(blk).writes[0].source.ty.shape] != full:
            sch.set_scope(blk, 0, "local")


def depthwise_in_place_kernel(graph: Graph, op: Op, schedules=None) -> KernelFunc:
    """A depthwise conv that may be called with its output over its input (MCUNet's in-place
    depthwise): channel by channel, the part of the input channel the windows read is first
    copied into a scratch plane (``ws``, :func:`~tvm_patchnet.analysis.liveness.plane_hw` rows x
    columns, the liveness rule's), then the output channel is computed from the plane. Output
    channel c is stored only where input channel c was, which is already copied: other channels
    are untouched. Needs one output channel per input channel. ``schedules``: as ``op_kernel``."""
    fast = schedules.depthwise_in_place_kernel(graph, op) if schedules else None
    if fast is not None:
        return fast
    xn, x = op.inputs[0], graph.t(op.inputs[0])
    rows, cols = plane_hw(graph, op)
    # The windows read rows 0..rows-1 and columns 0..cols-1 only: the conv is lowered on that
    # crop, an explicit stage whose size is the rule's, not what buffer compaction infers.
    crop = replace(graph, tensors={**graph.tensors, xn: replace(x, shape=(x.shape[0], rows, cols, x.shape[3]))})
    low = lower_op(crop, op)
    phs = _placeholders(graph, low.args)
    plane_t = te.compute(crop.t(xn).shape, lambda *i: phs[0](*i), name=op.name + "_plane")
    out = low.compute(plane_t, *phs[1:])
    sch = s_tir.Schedule(te.create_prim_func([*phs, out]))
    blk = sch.get_sblock(out.op.name)
    b, i, j, c = sch.get_loops(blk)
    sch.reorder(b, c, i, j)
    _intermediates_in_registers(sch)
    sch.compute_at(sch.get_sblock(op.name + "_plane"), sch.get_loops(blk)[1])
    return KernelFunc(_init_outside_reductions(sch), [*low.args, op.outputs[0]])


def accumulate_kernel(graph: Graph, conv: Op, add: Op, schedules=None) -> KernelFunc:
    """``conv`` and the residual ``add`` of its output as one kernel that may be called with the
    add's output over the skip input ("the block's last conv adds into the residual buffer"):
    each output element's conv accumulator and requantization are computed in registers, then
    added to skip element k, which is read before element k is written. ``schedules``: as
    ``op_kernel``."""
    fast = schedules.accumulate_kernel(graph, conv, add) if schedules else None
    if fast is not None:
        return fast
    cl, al = lower_op(graph, conv), lower_op(graph, add)
    conv_phs = _placeholders(graph, cl.args)
    conv_out = cl.compute(*conv_phs)
    skip = next(a for a in al.args if a != conv.outputs[0])
    skip_ph = te.placeholder(graph.t(skip).shape, graph.t(skip).dtype, name="skip")
    out = al.compute(*[conv_out if a == conv.outputs[0] else skip_ph for a in al.args])
    sch = s_tir.Schedule(te.create_prim_func([*conv_phs, skip_ph, out]))
    _intermediates_in_registers(sch)
    return KernelFunc(_init_outside_reductions(sch), [*cl.args, skip, add.outputs[0]])


def stage_kernel(graph: Graph, plan: PatchPlan, schedules=None) -> tuple[KernelFunc, dict[str, str]]:
    """The patch stage PrimFunc of ``plan`` (already scheduled patch by patch) and what each of
    its buffers holds (TIR buffer name -> patch-graph tensor, see ``PatchedStage.buffers``).
    ``schedules``: as ``op_kernel``; with them the stage's ops take their fast forms where they
    apply (:mod:`tvm_patchnet.schedules.stage`), the micro-kernels in ``KernelFunc.preamble``."""
    stage = build_stage(graph, plan, fast=schedules is not None)
    if stage.preamble:  # fast forms: their tensorized accumulators have no init left
        from ..schedules.stage import init_outside_reductions

        func = init_outside_reductions(s_tir.Schedule(stage.func))
    else:
        func = _init_outside_reductions(s_tir.Schedule(stage.func))
    return KernelFunc(func, [plan.stage_input, *stage.consts, plan.stage_output], stage.preamble), stage.buffers


def _intermediates_in_registers(sch: s_tir.Schedule) -> None:
    """Compute each intermediate element right where its only consumer uses it, in ``local``
    scope, when the consumer reads one element per iteration and iterates once per element
    (so nothing is recomputed): conv and pool accumulators, requantization chains. Row-wide
    values (softmax's max and sum) and values read twice stay buffers (the workspace)."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    for blk in reversed(blocks[:-1]):  # consumers first: each is at its final place already
        consumers = sch.get_consumers(blk)
        if len(consumers) != 1:
            continue
        cons = consumers[0]
        buf = sch.get(blk).writes[0].source
        loops = sch.get_loops(cons)
        iters = int(np.prod([int(sch.get(lp).extent) for lp in loops], dtype=np.int64))
        reads = [r for r in sch.get(cons).reads if r.source.same_as(buf)]
        reduces = any(int(iv.iter_type) != 0 for iv in sch.get(cons).iter_vars)
        single = all(int(rg.extent) == 1 for r in reads for rg in r.region)
        if reduces or not single or iters != int(np.prod([int(s) for s in buf.ty.shape], dtype=np.int64)):
            continue
        sch.compute_at(blk, loops[-1], preserve_unit_loops=True)
        sch.set_scope(blk, 0, "local")


def _init_outside_reductions(sch: s_tir.Schedule) -> tirx.PrimFunc:
    """Initialize each reduction once, before its reduction loops, instead of under a
    first-iteration test inside them: fewer branches, and no accumulator that C compilers
    think "may be used uninitialized". TE puts a block's reduction loops innermost."""
    blocks: list = []
    tvm_ffi.structural_walk(sch.mod["main"].body, (s_tir.SBlock, lambda b: blocks.append(b.name_hint)))
    for name in blocks:
        blk = sch.get_sblock(name)
        n_red = sum(int(iv.iter_type) != 0 for iv in sch.get(blk).iter_vars)
        if n_red:
            sch.decompose_reduction(blk, sch.get_loops(blk)[-n_red])
    return sch.mod["main"]


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
    the micro-kernels that kernel calls (``KernelFunc.preamble``), carried to its ``CKernel``.

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
