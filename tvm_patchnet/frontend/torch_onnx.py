"""Import float PyTorch modules and ONNX files as float :class:`Graph` objects.

Both go through TVM's Relax frontends (``from_exported_program`` on ``torch.export`` output,
``from_onnx``) and then one walker (:mod:`.float_graph`) from the float Relax module to the
float graph, so PyTorch and ONNX models share one conversion path. Quantize the result with
:func:`tvm_patchnet.ptq.quantize`.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..analysis.blocks import assign_blocks
from ..errors import PatchnetError, UnsupportedOpsError
from ..graph import Graph
from .float_graph import relax_to_float_graph
from .onnx_fold import fold_constants


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def import_pytorch(module, example_input, name: str | None = None) -> Graph:
    """Float graph of ``module`` (a ``torch.nn.Module``, put in eval mode) traced on
    ``example_input`` (an NCHW float batch, ndarray or tensor, of which the first image is used:
    graphs have batch 1; the graph input is NHWC)."""
    import torch
    from tvm.relax.frontend.torch import from_exported_program
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    name = name or type(module).__name__
    x = torch.as_tensor(np.asarray(example_input, np.float32))
    if x.ndim != 4:
        raise PatchnetError(f"{name}: example input must be an NCHW batch, got shape {tuple(x.shape)}")
    x = x[:1]
    try:
        with torch.no_grad():
            ep = torch.export.export(module.eval(), (x,)).run_decompositions()
    except Exception as e:  # torch raises many types for shape mismatches and untraceable code
        raise PatchnetError(f"{name}: torch.export failed for input shape {tuple(x.shape)}: {_one_line(e)}") from e
    known = ExportedProgramImporter().convert_map
    calls = [n for n in ep.graph.nodes if n.op == "call_function"]
    missing = [(i, n.target.__name__) for i, n in enumerate(calls) if n.target.__name__ not in known]
    if missing:
        raise UnsupportedOpsError(f"{name} (aten ops)", missing)
    try:
        mod = from_exported_program(ep, run_ep_decomposition=False)
    except Exception as e:
        raise PatchnetError(f"{name}: TVM could not import the exported program: {_one_line(e)}") from e
    g = relax_to_float_graph(mod, name, name)
    assign_blocks(g)
    return g


def import_onnx(path: str, input_shape: tuple[int, ...] | None = None) -> Graph:
    """Float graph of the ONNX file at ``path`` (graph input NHWC); ``input_shape`` (NCHW, batch
    1) fixes symbolic input dimensions (a symbolic batch dimension defaults to 1)."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception as e:
        raise PatchnetError(f"{path}: not a valid ONNX model ({_one_line(e)})") from e
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise PatchnetError(f"{path}: expected one input tensor, found {len(inputs)}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if input_shape is not None:
        if len(input_shape) != len(dims) or any(d not in (None, s) for d, s in zip(dims, input_shape)):
            raise PatchnetError(f"{path}: input shape {tuple(input_shape)} does not match the model's {dims}")
        dims = list(input_shape)
    dims = [1 if d is None and i == 0 else d for i, d in enumerate(dims)]
    if len(dims) != 4 or None in dims or dims[0] != 1:
        raise PatchnetError(f"{path}: input '{inputs[0].name}' must be one static NCHW image (batch 1), got "
                            f"{dims}; pass input_shape")
    try:
        model = fold_constants(model)
    except Exception as e:  # the reference evaluator raises many types on odd models
        raise PatchnetError(f"{path}: cannot evaluate the model's constant subgraphs ({_one_line(e)})") from e
    known = _get_convert_map()
    missing = [(i, n.op_type) for i, n in enumerate(model.graph.node) if n.op_type not in known
               and n.op_type != "Constant"]
    if missing:
        raise UnsupportedOpsError(path, missing)
    try:
        with warnings.catch_warnings():  # "Renaming name input.1 to input_1": TVM's own affair, not the user's
            warnings.simplefilter("ignore", UserWarning)
            mod = from_onnx(model, shape_dict={inputs[0].name: dims})
    except Exception as e:
        raise PatchnetError(f"{path}: TVM could not import the model: {_one_line(e)}") from e
    g = relax_to_float_graph(mod, model.graph.name or "onnx_model", path)
    # the model's own input and output names, as a user's runtime code knows them
    outs = [o.name for o in model.graph.output]
    g = g.renamed({g.inputs[0]: inputs[0].name, **(dict(zip(g.outputs, outs)) if len(outs) == len(g.outputs) else {})})
    assign_blocks(g)
    return g
