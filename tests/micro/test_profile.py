"""``patchnet run --profile``: per-kernel counts from a profile build of the firmware (model.c marks
each kernel call; QEMU's plugin records exact instruction counts at each mark, a Nucleo reads DWT),
the PROFILE command of protocol 4, metadata version 4's ``calls``, and the parsing and op mapping
of benchmarks/vs_cmsis_nn.py."""

from __future__ import annotations

import itertools
import json
import os
import random

import numpy as np
import pytest

from benchmarks import vs_cmsis_nn as bench
from tvm_patchnet import micro
from tvm_patchnet.archive import validate_metadata
from tvm_patchnet.errors import PatchnetError
from tvm_patchnet.micro.rpc import crc16

from .conftest import NEEDS_GCC, NEEDS_QEMU

KWS = "/work/shared/models/mlperftiny_kws_ref_model.tflite"
NEEDS_KWS = pytest.mark.skipif(not os.path.exists(KWS), reason="shared KWS model not present")


def _crc16_reference(data: bytes, crc: int = 0xFFFF) -> int:
    """The firmware's loop (rpc.c), for comparison with binascii's."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def test_crc16_through_binascii_equals_the_firmware_loop():
    rng = random.Random(3)
    for n in (0, 1, 7, 100, 1030):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc16(data) == _crc16_reference(data)
        assert crc16(data[n // 2:], crc16(data[:n // 2])) == crc16(data)  # chained, as send_from does


def test_profile_over_fake_serial_pages_the_marks(fake):
    marks = [10 * i * i for i in range(150)]  # 150 marks: three PROFILE answers (64 counts each)
    s, _ = fake(profile=marks, profile_overhead=9)
    assert s.info().profile
    s.set_input(np.zeros(48, np.int8))
    s.run(1)
    p = s.profile()
    assert p.counter == "cycles" and p.counts == marks and p.overhead == 9
    assert p.kernels() == [b - a - 9 for a, b in itertools.pairwise(marks)]


def test_profile_needs_a_profile_build_and_a_table_that_holds_every_mark(fake):
    s, _ = fake()
    with pytest.raises(micro.MicroError, match=r"^nucleo-f412zg: the firmware is not a profile build"):
        s.profile()
    s, _ = fake(profile=list(range(0, 1000, 10)), profile_cap=64)
    s.set_input(np.zeros(48, np.int8))
    s.run(1)
    with pytest.raises(micro.MicroError, match=r"made 100 marks, more than the firmware's profile table holds \(64\)"):
        s.profile()


def test_metadata_v3_still_reads_and_v4_needs_calls():
    meta = {"format": "tvm-patchnet compiled model", "version": 4, "model": "m", "target": "cortex-m4",
            "board": "qemu-m4", "arena_bytes": 64, "weight_bytes": 0,
            "inputs": [{"name": "x", "shape": [1, 4], "dtype": "int8", "scale": 0.5, "zero_point": 0}],
            "outputs": [{"name": "y", "shape": [1, 4], "dtype": "int8", "scale": 0.5, "zero_point": 0}],
            "planner": "greedy", "arena_lower_bound_bytes": 8, "allocations": [], "kernels": 1,
            "profile": {"peak_bytes": 8, "peak_bytes_no_inplace": 8, "total_macs": 16}, "patch": None,
            "source": {"builtin": "m", "resolution": None, "width": None},
            "calls": [{"name": "fc_0", "kernel": "tvmgen_default_fc_0", "ops": ["fc_0"], "macs": 16}]}
    assert validate_metadata(meta) == []
    v3 = {k: v for k, v in meta.items() if k != "calls"} | {"version": 3}
    assert validate_metadata(v3) == []
    assert validate_metadata({k: v for k, v in meta.items() if k != "calls"}) == ["metadata.calls: missing"]
    bad = json.loads(json.dumps(meta))
    bad["calls"][0]["ops"] = []
    assert validate_metadata(bad) == ["metadata.calls[0].ops: expected a list (1 to 65,536 entries), got []"]
    assert "version 4 (or 3), got \"tvm-patchnet compiled model\" version 2" in \
        validate_metadata(meta | {"version": 2})[0]


# -- on QEMU ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kws(tmp_path_factory):
    """The shared KWS model compiled layer by layer and patched (2x2 patches, blocks 0..2)."""
    from tvm_patchnet.deploy import compile_model

    d = tmp_path_factory.mktemp("kws")
    plain, patched = str(d / "kws.tar"), str(d / "kws-p.tar")
    compile_model(KWS, plain)
    compile_model(KWS, patched, patches=2, split=3)
    return plain, patched


@NEEDS_KWS
@NEEDS_GCC
@NEEDS_QEMU
@pytest.mark.slow
def test_profile_lines_sum_to_the_plain_run_exactly(kws, tmp_path):
    from tvm_patchnet.analysis.profile import profile
    from tvm_patchnet.archive import read_archive
    from tvm_patchnet.deploy import run_model
    from tvm_patchnet.frontend import load_model

    x = np.random.default_rng(1).integers(-128, 128, size=(1, 49, 10, 1), dtype=np.int8)
    plain = run_model(kws[0], x=x)
    rep = run_model(kws[0], x=x, profile=True, work_dir=str(tmp_path / "kb"))
    meta = read_archive(kws[0], str(tmp_path / "m"))
    calls = meta["calls"]
    assert [k.name for k in rep.profile] == [c["name"] for c in calls] + ["outside kernels"]
    # the profile build's count minus the marks' exact cost (2 instructions each) is the plain build's
    assert rep.count == plain.count and rep.profile_overhead == 2 * (len(calls) + 1)
    assert sum(k.count for k in rep.profile) == rep.count
    assert all(k.count > 0 for k in rep.profile)
    assert rep.arrays()[0].tolist() == plain.arrays()[0].tolist()
    # MACs are the profiler's, op by op
    layers = {la.name: la.macs for la in profile(load_model(KWS)).layers}
    for k in rep.profile[:-1]:
        assert k.macs == sum(layers[o] for o in k.ops)
    assert sum(k.macs for k in rep.profile) == meta["profile"]["total_macs"]
    # the normal firmware has no marks; the profile build's model.c calls the hook
    with open(tmp_path / "kb" / "model" / "codegen" / "host" / "src" / "model.c") as f:
        assert f.read().count("TVMGEN_MARK();") == len(calls) + 1


@NEEDS_KWS
@NEEDS_GCC
@NEEDS_QEMU
@pytest.mark.slow
def test_profile_cli_text_and_json_with_a_patch_stage(kws, capsys):
    from tvm_patchnet.cli.main import main

    assert main(["run", kws[1], "--profile", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    prof = d["profile"]
    stage = [p for p in prof if p["name"] == "patch_stage"]
    assert len(stage) == 1 and len(stage[0]["ops"]) > 1  # the patch stage is one line
    assert set(prof[0]) == {"name", "kernel", "ops", "macs", "count", "per_mac", "share"}
    assert prof[-1]["name"] == "outside kernels" and prof[-1]["kernel"] is None
    assert sum(p["count"] for p in prof) == d["instructions"] == d["count"]
    assert abs(sum(p["share"] for p in prof) - 1) < 1e-9
    assert stage[0]["macs"] == d_stage_macs(kws[1])  # with the overlap: the planner's stage_macs_patched
    assert main(["run", kws[1], "--profile"]) == 0
    out = capsys.readouterr().out.splitlines()
    i = next(k for k, ln in enumerate(out) if ln.startswith("profile ("))
    table = out[i + 2:]
    assert [ln.split()[0] for ln in table] == [p["name"] for p in prof][:-1] + ["outside", "total"]
    assert "instructions" in out[i] and "cycles" not in out[i]


def d_stage_macs(archive: str) -> int:
    import tarfile

    with tarfile.open(archive) as t:
        return json.load(t.extractfile("metadata.json"))["patch"]["stage_macs_patched"]


@NEEDS_KWS
@pytest.mark.slow
def test_profile_of_an_old_archive_is_one_line(kws, tmp_path):
    import shutil
    import tarfile

    from tvm_patchnet.deploy import run_model

    d = tmp_path / "old"
    with tarfile.open(kws[0]) as t:
        t.extractall(d, filter="data")
    meta = json.loads((d / "metadata.json").read_text())
    meta.pop("calls")
    meta["version"] = 3
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(PatchnetError, match=r"compiled before per-kernel profiles \(metadata version 3\): recompile"):
        run_model(str(d), profile=True)
    shutil.rmtree(d)


@NEEDS_KWS
@NEEDS_GCC
@pytest.mark.slow
def test_nucleo_dwt_profile_build_links(kws, tmp_path):
    from tvm_patchnet.archive import read_archive
    from tvm_patchnet.micro.elf import Elf

    read_archive(kws[0], str(tmp_path / "m"))
    src = str(tmp_path / "m" / "codegen" / "host" / "src")
    d = micro.create_project(src, "nucleo-f412zg", str(tmp_path / "p"), profile=True)
    micro.build(d)
    sym = Elf(os.path.join(d, "build", "fw.elf")).symbols()
    assert "tvmgen_profile_mark" in sym and "icount_profile" not in sym
    plain = micro.create_project(src, "nucleo-f412zg", str(tmp_path / "q"))
    micro.build(plain)
    assert "tvmgen_profile_mark" not in Elf(os.path.join(plain, "build", "fw.elf")).symbols()


# -- benchmarks/vs_cmsis_nn.py: no QEMU ---------------------------------------------------------
COUNTS = """MODEL tiny total 1100 arena 64
OP 0 CONV_2D 500
OP 1 ADD 100
OP 2 RESHAPE 20
OP 3 FULLY_CONNECTED 480
MODEL other total 7 arena 8
OP 0 SOFTMAX 7
DONE
MODEL ignored total 1 arena 1
"""


def test_counts_txt_parsed_and_checked():
    b = bench.parse_counts(COUNTS)
    assert list(b) == ["tiny", "other"]
    assert (b["tiny"].total, b["tiny"].arena, b["tiny"].ops[3]) == (1100, 64, (3, "FULLY_CONNECTED", 480))
    assert bench.parse_counts(COUNTS.replace("total 1100", "total 1110"))["tiny"].outside_ops == 10
    with pytest.raises(ValueError, match="sum to 1,101, more than its total 1,100"):
        bench.parse_counts(COUNTS.replace("OP 3 FULLY_CONNECTED 480", "OP 3 FULLY_CONNECTED 481"))
    with pytest.raises(ValueError, match="out of order"):
        bench.parse_counts(COUNTS.replace("OP 1 ADD", "OP 5 ADD"))


def test_baseline_ops_map_to_our_calls():
    base = bench.parse_counts(COUNTS)["tiny"]
    calls = [{"name": "conv_2d_0", "ops": ["conv_2d_0", "add_1"], "macs": 100},
             {"name": "fully_connected_3", "ops": ["fully_connected_3"], "macs": 48}]
    per_call, rest = bench.baseline_per_call(calls, base)
    assert per_call == [600, 480] and rest == 20  # the RESHAPE is a view of ours: outside every call
    base = bench.parse_counts(COUNTS.replace("total 1100", "total 1103"))["tiny"]
    assert bench.baseline_per_call(calls, base)[1] == 23  # + the Invoke's own instructions
    with pytest.raises(ValueError, match="TFLite op 1, which counts.txt calls ADD"):
        bench.baseline_per_call([{"name": "x", "ops": ["mul_1"], "macs": 0}], base)
    assert bench.baseline_per_call([{"name": "p", "ops": ["conv_2d_9"], "macs": 1}], base)[0] == [None]


@pytest.mark.skipif(not os.path.exists(bench.COUNTS), reason="shared baselines not present")
def test_shared_counts_txt_and_models():
    with open(bench.COUNTS) as f:
        b = bench.parse_counts(f.read())
    assert {"vww_96", "resnet8", "kws", "str_ww", "ad01"} <= set(b)
    files = bench.model_files(b)
    assert os.path.basename(files["kws"]) == "mlperftiny_kws_ref_model.tflite"
    assert os.path.basename(files["resnet8"]) == "mlperftiny_ic_resnet8_quant.tflite"


@NEEDS_KWS
def test_kws_ops_are_named_by_their_tflite_index():
    from tvm_patchnet.frontend import load_model

    g = load_model(KWS)
    with open(bench.COUNTS) as f:
        base = bench.parse_counts(f.read())["kws"]
    for op in g.ops:
        name, idx = bench.tflite_index(op.name)
        assert base.ops[idx][1] == name == op.attrs["tflite_op"]
    kinds = [bench.kind_of(g, [op.name]) for op in g.ops]
    assert kinds[:3] == ["stem / other conv", "depthwise 3x3", "1x1 conv (C >= 16)"] and "FC" in kinds
