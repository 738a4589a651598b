"""The compiled-model archive: what ``patchnet compile`` writes and ``run`` / ``micro`` read.

Layout (after microTVM's Model Library Format), as a ``.tar``, ``.tar.gz`` / ``.tgz`` or a folder::

    metadata.json                               FORMAT, version, sizes (bytes), inputs/outputs, memory plan
    codegen/host/src/NAME.c | NAME.h            plain C (NAME: letters, digits, _)
    codegen/host/include/NAME.h
    src/model.tflite | src/model.onnx           what was compiled (for the host reference)
    src/graph.npz                               the int8 graph compiled, when no model file rebuilds it
                                                (a float model quantized on calibration data, a graph
                                                quantized in Python): the host reference (graph_file)

An archive is untrusted input. :func:`read_archive` accepts only those members (every name
checked against a strict pattern; regular files and folders only: no links, devices or FIFOs;
size limits), never follows a symbolic link of a folder archive, and validates metadata.json
against :data:`SCHEMA` (one line per problem) and against the sizes ``model.h`` declares before
anything uses it. Names never reach a shell: the board build lists the sources it compiles itself.

:func:`write_archive` never deletes or overwrites what patchnet did not write: an existing output
must be an earlier archive or folder of this format, holding nothing else.
"""

from .graph_file import load_graph, save_graph
from .layout import FORMAT, GRAPH_MEMBER, METADATA_VERSION, TARGET_BOARDS, member_kind
from .read import read_archive
from .schema import SCHEMA, declared_sizes, io_bytes, validate_metadata
from .write import check_output, output_kind, write_archive

__all__ = ["FORMAT", "GRAPH_MEMBER", "METADATA_VERSION", "SCHEMA", "TARGET_BOARDS", "check_output", "declared_sizes",
           "io_bytes", "load_graph", "member_kind", "output_kind", "read_archive", "save_graph", "validate_metadata",
           "write_archive"]
