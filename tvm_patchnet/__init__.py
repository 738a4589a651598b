"""tvm-patchnet: MCUNetV2 patch-based inference on Apache TVM (0.27, Relax + TIR)."""

from .errors import PatchnetError, UnsupportedOpsError
from .graph import Graph, Op, Tensor

__all__ = ["Graph", "Op", "PatchnetError", "Tensor", "UnsupportedOpsError"]
__version__ = "0.1.0"
