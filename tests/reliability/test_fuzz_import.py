"""The TFLite importer refuses invalid models with one line and never crashes or hangs.

A seeded fuzzer (:mod:`tests.reliability.fuzz_tflite`) mutates the shared models' bytes; every
mutant must either import to a graph that is sane by the checks below (written independently
of the importer's own rules) and profiles to finite figures, or fail with one-line
:class:`PatchnetError`. Targeted mutations must be refused naming the tensor. Built-in
architectures refuse absurd ``--resolution`` / ``--width`` before allocating anything.
"""

from __future__ import annotations

import json
import math
import resource
import signal
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
import tflite
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tests.conftest import SHARED_MODELS, model_path
from tests.reliability.fuzz_tflite import find_sites, mutants, mutate
from tvm_patchnet.analysis.profile import profile
from tvm_patchnet.cli.main import main
from tvm_patchnet.errors import PatchnetError
from tvm_patchnet.frontend.tflite import load_tflite
from tvm_patchnet.zoo.blocks import build_net, check_resolution
from tvm_patchnet.zoo.configs import ConvSpec, NetSpec
from tvm_patchnet.zoo.mobilenetv2 import mobilenetv2_spec

MUTANTS = 400
SEED = 20240615
#: seconds one mutant may take to import and profile before it counts as a hang
HANG_SECONDS = 20
#: the importer's documented limit for one tensor (bytes)
TENSOR_LIMIT = 256 << 20
_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-(1 << 15), (1 << 15) - 1),
           "int32": (-(1 << 31), (1 << 31) - 1), "int64": (-(1 << 63), (1 << 63) - 1)}


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` can swallow it."""


def _alarm(signum, frame):
    raise Hang


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    return {name: Path(model_path(name)).read_bytes() for name in SHARED_MODELS}


def _load(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return load_tflite(str(path))


def _refusal(tmp_path, name: str, data: bytes) -> str:
    """The one-line message a refused model gets (fails if it is accepted)."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(PatchnetError) as e:
        load_tflite(str(path))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    return msg


def assert_sane(g) -> None:
    """Independent checks of an accepted graph: shapes, sizes, quantization, constants, profile."""
    for name, t in g.tensors.items():
        assert all(isinstance(d, int) and d >= 1 for d in t.shape), (name, t.shape)
        assert t.nbytes <= TENSOR_LIMIT, (name, t.shape)
        if t.scale is not None:
            s = np.asarray(t.scale, np.float64)
            assert s.size in (1, t.shape[t.quant_axis] if t.shape else 1), (name, s.size, t.shape)
            assert np.all(np.isfinite(s)) and np.all(s > 0), (name, s)
            lo, hi = _RANGES.get(t.dtype, (-math.inf, math.inf))
            zp = np.asarray(t.zero_point)
            assert zp.size == s.size and np.all(zp >= lo) and np.all(zp <= hi), (name, zp)
        if t.const:
            assert t.data is not None and t.data.shape == t.shape and str(t.data.dtype) == t.dtype, name
    assert g.inputs and g.outputs and not any(g.t(n).const for n in g.inputs + g.outputs)
    assert all(any(n and not g.t(n).const for n in op.inputs) for op in g.ops)  # every op reads an activation
    g.validate()
    r = profile(g)
    activations = sum(t.nbytes for t in g.tensors.values() if not t.const)
    assert 0 < r.peak_bytes <= r.peak_bytes_no_inplace <= 8 * activations + 8 * (1 << 20)
    assert r.total_macs >= 0 and r.weight_bytes >= 0
    assert all(b.peak_bytes >= 0 and b.macs >= 0 for b in r.blocks)
    assert all(0 <= la.macs <= 1 << 40 for la in r.layers)
    json.dumps(r.to_json(), allow_nan=False)  # every figure finite


def test_sites_read_back_the_stored_values(models):
    """The fuzzer's byte offsets point at the fields the tflite reader returns."""
    buf = models["mlperftiny_vww_96_int8.tflite"]
    sg = tflite.Model.GetRootAsModel(buf, 0).Subgraphs(0)
    for s in find_sites(buf):
        if s.kind == "dim":
            assert s.value in list(sg.Tensors(s.tensor).ShapeAsNumpy())
        elif s.kind == "scale":
            assert s.value in list(sg.Tensors(s.tensor).Quantization().ScaleAsNumpy())
        elif s.kind == "buffer_index":
            assert s.value == sg.Tensors(s.tensor).Buffer()
        elif s.kind == "op_input":
            assert s.value in list(sg.Operators(s.op).InputsAsNumpy())


def test_fuzzed_models_import_sanely_or_fail_with_one_line(models, tmp_path):
    old = signal.signal(signal.SIGALRM, _alarm)
    accepted, refused, failures = 0, 0, []
    try:
        for k, (name, m) in enumerate(mutants(models, MUTANTS, SEED)):
            path = tmp_path / f"m{k}.tflite"
            path.write_bytes(m.data)
            signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
            try:
                g = load_tflite(str(path))
                assert_sane(g)
                accepted += 1
            except PatchnetError as e:
                refused += 1
                if "\n" in str(e) or not str(e).startswith(f"{path}: "):
                    failures.append(f"{name} {m.what}: message not one line naming the file: {e!r}")
            except Hang:
                failures.append(f"{name} {m.what}: no answer within {HANG_SECONDS} s")
            except Exception as e:  # noqa: BLE001 - the test's point: report every other exception
                failures.append(f"{name} {m.what}: {type(e).__name__}: {' '.join(str(e).split())[:160]}")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            path.unlink()
    finally:
        signal.signal(signal.SIGALRM, old)
    assert not failures, f"{len(failures)} of {MUTANTS} mutants mishandled:\n" + "\n".join(failures[:40])
    assert accepted + refused == MUTANTS and accepted > 0 and refused > MUTANTS // 4, (accepted, refused)


def _first_weights(buf: bytes) -> tuple[int, str]:
    """Index and name of the first constant int8 tensor with more than one element (conv weights)."""
    model = tflite.Model.GetRootAsModel(buf, 0)
    sg = model.Subgraphs(0)
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        if t.Type() == tflite.TensorType.INT8 and model.Buffers(t.Buffer()).DataLength() > 1:
            return i, t.Name().decode()
    raise AssertionError("no int8 weights")


def _activation(buf: bytes) -> tuple[int, str]:
    """Index and name of the output of op 0 (a 4-D int8 activation in the image models)."""
    sg = tflite.Model.GetRootAsModel(buf, 0).Subgraphs(0)
    i = int(sg.Operators(0).OutputsAsNumpy()[0])
    return i, sg.Tensors(i).Name().decode()


@pytest.mark.parametrize("model", ["mlperftiny_vww_96_int8.tflite", "mlperftiny_kws_ref_model.tflite"])
@pytest.mark.parametrize(("target", "kind", "value", "rule"), [
    ("weights", "scale", 0.0, "scale"),
    ("weights", "scale", math.nan, "scale"),
    ("activation", "scale", 0.0, "scale"),
    ("activation", "scale", -math.inf, "scale"),
    ("activation", "zero_point", 128, "zero point"),
    ("weights", "zero_point", -(1 << 40), "zero point"),
    ("activation", "dim", -1, "dimension"),
    ("activation", "dim", 0, "dimension"),
    ("activation", "dim", 1 << 30, "MiB"),
    ("weights", "data_len", "short", "bytes"),
    ("weights", "data_len", "long", "bytes"),
])
def test_targeted_mutations_are_refused_naming_the_tensor(models, tmp_path, model, target, kind, value, rule):
    buf = models[model]
    idx, name = _first_weights(buf) if target == "weights" else _activation(buf)
    if kind == "data_len":
        site = next(s for s in find_sites(buf) if s.kind == "data_len" and s.tensor == idx)
        value = site.value - 1 if value == "short" else site.value + 3
    index = 3 if kind == "dim" else 0  # the channel axis of a 4-D activation
    data, _ = mutate(buf, kind, value, tensor=idx, index=index)
    msg = _refusal(tmp_path, model, data)
    assert f"tensor {idx} '{name}'" in msg and rule in msg, msg


def test_op_and_subgraph_indices_out_of_range_are_refused(models, tmp_path):
    buf = models["mlperftiny_vww_96_int8.tflite"]
    n = tflite.Model.GetRootAsModel(buf, 0).Subgraphs(0).TensorsLength()
    data, _ = mutate(buf, "op_input", n + 5, index=0)
    msg = _refusal(tmp_path, "a.tflite", data)
    assert f"op 0 (CONV_2D): tensor index {n + 5} is out of range" in msg, msg
    data, _ = mutate(buf, "sg_output", -3)
    msg = _refusal(tmp_path, "b.tflite", data)
    assert "subgraph outputs: tensor index -3 is out of range" in msg, msg


@pytest.mark.parametrize(("field", "value", "rule"), [
    ("option:stride_w", 0, "stride"), ("option:stride_h", -2, "stride"), ("option:stride_w", 1000, "output"),
    ("option:depth_multiplier", 3, "depth multiplier"),
])
def test_bad_op_options_are_refused_naming_the_op(models, tmp_path, field, value, rule):
    buf = models["mlperftiny_vww_96_int8.tflite"]
    data, site = mutate(buf, field, value)
    msg = _refusal(tmp_path, "opts.tflite", data)
    assert f"op {site.op} (" in msg and rule in msg, msg


def test_pool_window_larger_than_input_is_refused(models, tmp_path):
    buf = models["mlperftiny_kws_ref_model.tflite"]
    data, site = mutate(buf, "option:filter_h", 1000)
    msg = _refusal(tmp_path, "pool.tflite", data)
    assert f"op {site.op} (AVERAGE_POOL_2D)" in msg and "1000" in msg, msg


def _repacked(buf: bytes, edit) -> bytes:
    """``buf`` unpacked to the object API, changed by ``edit(model)``, packed again."""
    m = schema.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    edit(m)
    builder = flatbuffers.Builder(0)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _external_weights(buf: bytes, offset_delta: int = 0, size_delta: int = 0) -> tuple[bytes, int, str]:
    """The model with its first weights moved behind the flatbuffer (Buffer.offset / size),
    the stored offset and size off by ``offset_delta`` / ``size_delta`` bytes."""
    idx, name = _first_weights(buf)
    offset_mark, size_mark = 0x5A5A5A5A5A5A5A5A, 0x3C3C3C3C3C3C3C3C  # patched once the layout is known
    payload = b""

    def externalize(m):
        nonlocal payload
        b = m.buffers[m.subgraphs[0].tensors[idx].buffer]
        payload = bytes(np.asarray(b.data, np.uint8))
        b.data, b.offset, b.size = None, offset_mark, size_mark

    head = bytearray(_repacked(buf, externalize))
    head += bytes(-len(head) % 16)
    for mark, value in ((offset_mark, len(head) + offset_delta), (size_mark, len(payload) + size_delta)):
        at = head.index(mark.to_bytes(8, "little"))
        head[at:at + 8] = value.to_bytes(8, "little")
    return bytes(head) + payload, idx, name


def test_external_buffers_are_read_and_checked(models, tmp_path):
    buf = models["mlperftiny_vww_96_int8.tflite"]
    data, idx, name = _external_weights(buf)
    g = _load(tmp_path, "ext.tflite", data)
    ref = load_tflite(model_path("mlperftiny_vww_96_int8.tflite"))
    assert np.array_equal(g.t(name).data, ref.t(name).data) and g.t(name).const
    for k, (do, ds) in enumerate([(10 << 20, 0), (0, 7), (0, -1)]):
        bad, _, _ = _external_weights(buf, do, ds)
        msg = _refusal(tmp_path, f"ext{k}.tflite", bad)
        assert f"tensor {idx} '{name}'" in msg, msg


def test_ops_without_stored_options_take_the_defaults(models, tmp_path):
    """An op whose options table is absent reads every option at its schema default (no
    fused activation for FULLY_CONNECTED), as TFLite does."""
    def drop_options(m):
        op = m.subgraphs[0].operators[0]
        op.builtinOptionsType, op.builtinOptions = 0, None

    data = _repacked(models["tflm_hello_world_int8.tflite"], drop_options)
    g = _load(tmp_path, "noopts.tflite", data)
    ref = load_tflite(model_path("tflm_hello_world_int8.tflite"))
    assert ref.ops[0].attrs["act"] == "relu" and g.ops[0].attrs["act"] is None
    assert [op.kind for op in g.ops] == [op.kind for op in ref.ops]


def test_control_characters_in_names_keep_the_message_on_one_line(models, tmp_path):
    buf = models["mlperftiny_kws_ref_model.tflite"]
    idx, _ = _activation(buf)

    def rename(m):
        m.subgraphs[0].tensors[idx].name = b"evil\nname\x1b[2J"

    data, _ = mutate(_repacked(buf, rename), "scale", 0.0, tensor=idx)
    msg = _refusal(tmp_path, "ctrl.tflite", data)
    assert f"tensor {idx} 'evil?name?[2J'" in msg, msg


def test_valid_models_still_import():
    for name in SHARED_MODELS:
        assert_sane(load_tflite(model_path(name)))


# ------------------------------------------------------------------ built-in architectures
@pytest.fixture
def memory_cap():
    """Cap the address space at 2 GiB above what the process already maps, so an allocation the
    limits should have prevented fails with MemoryError instead of exhausting the machine."""
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    old = resource.getrlimit(resource.RLIMIT_AS)
    cap = mapped + (2 << 30) if old[1] == resource.RLIM_INFINITY else min(mapped + (2 << 30), old[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, old[1]))
    yield
    resource.setrlimit(resource.RLIMIT_AS, old)


def _one_line_error(capsys, *argv) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(("flag", "value", "words"), [
    ("--resolution", "100000", ("resolution", "100000")),
    ("--resolution", "0", ("resolution", "got 0")),
    ("--resolution", "-5", ("resolution", "got -5")),
    ("--resolution", "31", ("resolution", "got 31")),
    ("--width", "0", ("width", "0")),
    ("--width", "-1", ("width", "-1")),
    ("--width", "nan", ("width", "nan")),
    ("--width", "inf", ("width", "inf")),
    ("--width", "100", ("width", "100")),
])
@pytest.mark.parametrize("arch", ["mobilenetv2", "mbv2-rd"])
def test_absurd_resolution_and_width_are_refused(capsys, memory_cap, arch, flag, value, words):
    line = _one_line_error(capsys, "profile", arch, flag, value)
    assert line.startswith("patchnet profile: error: ") and all(w in line for w in words), line


@pytest.mark.parametrize("arch", ["mcunet-320kb-1mb", "mnasnet"])
def test_fixed_designs_refuse_absurd_resolution(capsys, memory_cap, arch):
    line = _one_line_error(capsys, "profile", arch, "--resolution", "100000")
    assert "resolution" in line and "100000" in line, line


def test_tensor_limit_applies_to_built_ins_before_allocation(memory_cap):
    """A network spec within the flag limits whose stem output (512x512x2000 int8, 500 MiB) is
    too big is refused by the graph's tensor limit, before the builder allocates it."""
    from tvm_patchnet.zoo.blocks import MAX_RESOLUTION  # (imported here: new with the limits)

    spec = NetSpec("wide-stem", MAX_RESOLUTION, ConvSpec(2000, 3, 2), (), ConvSpec(8))
    with pytest.raises(PatchnetError, match=r"wide-stem: tensor 'conv_0.*500 MiB, over the 256 MiB limit") as e:
        build_net(spec)
    assert "\n" not in str(e.value)


def test_largest_allowed_settings_are_not_refused_early():
    """The limits are not so tight that ordinary settings fail (no graph built: the spec only)."""
    from tvm_patchnet.zoo.blocks import MAX_RESOLUTION, MAX_WIDTH

    assert check_resolution("x", 32) == 32 and check_resolution("x", MAX_RESOLUTION) == MAX_RESOLUTION
    assert mobilenetv2_spec(1.4, 224).first_conv.out_ch == 48
    assert mobilenetv2_spec(MAX_WIDTH, MAX_RESOLUTION).first_conv.out_ch == 128
