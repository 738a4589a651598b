"""End to end on emulated boards: the stand-in model over RPC, exact instruction counts, and
"does it fit an F412?" answered in QEMU."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest

from tvm_patchnet import micro
from tvm_patchnet.micro.elf import Elf
from tvm_patchnet.micro.rpc import PROTO_VERSION
from tvm_patchnet.micro.session import Session
from tvm_patchnet.micro.transport import QemuTransport

from .conftest import NEEDS_GCC, NEEDS_QEMU
from .standin import expected_output, write_standin

pytestmark = [NEEDS_GCC, NEEDS_QEMU, pytest.mark.slow]
F412_SRAM = 256 * 1024


@pytest.mark.parametrize("board", ["qemu-m4", "qemu-m7"])
def test_standin_runs_over_rpc(built, board):
    with micro.Session(built(board)) as s:
        info = s.info()
        assert (info.board, info.counter, info.input_bytes, info.output_bytes, info.arena_bytes) == \
            (board, "instructions", 48, 100, 256)
        for seed in (0, 1):
            x = np.random.default_rng(seed).integers(-128, 128, 48, dtype=np.int8)
            s.set_input(x)
            st = s.run(3)
            np.testing.assert_array_equal(s.get_output(), expected_output(x, 100))
        # the stand-in has no data-dependent branches: every run executes the same instructions
        assert st.counter == "instructions" and st.runs == 3 and st.min == st.max > 100 and st.total == 3 * st.min
        assert st.rc == 0 and not st.stack_overflow and 0 < st.run_stack_bytes < st.peak_stack_bytes < 1024
        assert s.stats().total == st.total
        rep = s.check_fit()
        assert rep.sram_bytes == st.data_bytes + st.bss_bytes + st.peak_stack_bytes == rep.static_sram_bytes + \
            st.peak_stack_bytes


@pytest.mark.parametrize("board", ["qemu-m4", "qemu-m7"])
def test_known_loop_exact_instruction_count(built, board):
    """known_loop(n) executes 2n+1 instructions; the measured call adds its blx: 2n+2."""
    with micro.Session(built(board)) as s:
        for n in (1, 10, 1000, 250_000):
            assert s.calibrate(n) == 2 * n + 2


def test_without_plugin_there_is_no_count(built):
    with micro.Session(built("qemu-m4"), options={"plugin": False}) as s:
        assert s.info().counter is None
        st = s.run(2)
        assert st.counter is None and st.total == 0


def test_stack_measurement_sees_the_model_stack(tmp_path):
    cg = write_standin(str(tmp_path / "cg"), stack_bytes=3000)
    d = micro.create_project(cg, "qemu-m4", str(tmp_path / "p"))
    micro.build(d)
    with micro.Session(d) as s:
        s.set_input(bytes(48))
        st = s.run(1)
        assert 3000 <= st.run_stack_bytes < 3100 and st.peak_stack_bytes > st.run_stack_bytes


def test_fits_f412(tmp_path):
    cg = write_standin(str(tmp_path / "cg"), arena_bytes=200_000, stack_bytes=2000)
    d = micro.create_project(cg, "qemu-m4", str(tmp_path / "p"), memory_map="nucleo-f412zg")
    rep = micro.build(d)
    assert rep.ram_budget == F412_SRAM and rep.static_sram_bytes > 200_000
    with micro.Session(d) as s:
        assert s.info().ram_bytes == F412_SRAM
        s.set_input(bytes(48))
        s.run(1)
        rep = s.check_fit()
        assert rep.peak_stack_bytes > 2000 and rep.sram_bytes <= F412_SRAM


def test_does_not_link_for_f412(tmp_path):
    cg = write_standin(str(tmp_path / "cg"), arena_bytes=300_000)
    d = micro.create_project(cg, "qemu-m4", str(tmp_path / "p"), memory_map="nucleo-f412zg")
    with pytest.raises(micro.DoesNotFit) as e:
        micro.build(d)
    msg = str(e.value)
    m = re.fullmatch(r"qemu-m4 with the nucleo-f412zg memory map: does not fit: \.data \+ \.bss \+ 4,096 B minimum "
                     r"stack exceed the 262,144 B of SRAM by ([\d,]+) B", msg)
    assert m, msg
    # the excess is exact: link again on the full 4 MB and compare
    d2 = micro.create_project(cg, "qemu-m4", str(tmp_path / "p2"))
    rep = micro.build(d2)
    sym = Elf(os.path.join(d2, "build", "fw.elf")).symbols()
    used = sym["__stack_limit"] - 0x20000000 + 4096  # .data + .bss + alignment + minimum stack
    assert int(m.group(1).replace(",", "")) == used - F412_SRAM and rep.static_sram_bytes > F412_SRAM - 4096


def test_stack_overflow_on_f412_is_reported_and_board_recovers(tmp_path):
    # links (4 KB minimum stack fits) but the run wants 8 KB of stack: the MPU guard catches it
    cg = write_standin(str(tmp_path / "cg"), arena_bytes=F412_SRAM - 7000, stack_bytes=8000)
    d = micro.create_project(cg, "qemu-m4", str(tmp_path / "p"), memory_map="nucleo-f412zg")
    micro.build(d)
    with micro.Session(d) as s:
        free = s.info().stack_bytes
        s.set_input(bytes(48))
        with pytest.raises(micro.DoesNotFit) as e:
            s.run(1)
        assert str(e.value) == (f"qemu-m4 with the nucleo-f412zg memory map: stack overflow: the run needs more than "
                                f"the {free:,} B of stack left in SRAM after .data + .bss (MPU guard hit; the board "
                                "reset)")
        assert s.ping(b"back") == b"back"  # the firmware reset and answers again


def _edited_copy(project: str, dst: str, rel: str, old: str, new: str) -> str:
    """A copy of ``project`` with ``old`` replaced by ``new`` in its file ``rel``."""
    shutil.copytree(project, dst)
    path = os.path.join(dst, *rel.split("/"))
    with open(path) as f:
        text = f.read()
    assert old in text
    with open(path, "w") as f:
        f.write(text.replace(old, new))
    return dst


def test_firmware_of_another_protocol_is_refused(built, tmp_path):
    d = _edited_copy(built("qemu-m4"), str(tmp_path / "old"), "common/rpc.h",
                     f"#define RPC_PROTO_VERSION {PROTO_VERSION}", "#define RPC_PROTO_VERSION 1")
    micro.build(d)
    with micro.Session(d) as s, pytest.raises(micro.MicroError) as e:
        s.set_input(bytes(48))
    assert str(e.value) == f"qemu-m4: firmware speaks protocol 1, host {PROTO_VERSION}: rebuild the project"
    with micro.Session(built("qemu-m4")) as s:
        assert s.info().protocol == PROTO_VERSION


def test_qemu_exit_is_one_line_error(built, tmp_path):
    elf = os.path.join(built("qemu-m4"), "build", "fw.elf")
    t = QemuTransport("no-such-machine", elf, log_path=str(tmp_path / "q.log"))
    t.open()
    with pytest.raises(micro.TransportError, match=r"^QEMU \(no-such-machine\) exited with code 1: qemu-system-arm: unsupported machine type$"):
        Session(transport=t, timeout=5, retries=0).info()
    t.close()


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm not installed")
def test_nucleo_f412_firmware_on_qemu_stm32f405(built, tmp_path):
    """No Nucleo here, but QEMU's netduinoplus2 (STM32F405) models the F4 USART at the same
    USART3 address and flash at 0x08000000: the F412 firmware runs there unchanged except for
    SRAM (the F405 has 128 KB). It checks start-up from flash and the hand-written USART driver.
    QEMU models no DWT, so cycle counts read 0."""
    d = _edited_copy(built("nucleo-f412zg"), str(tmp_path / "f412"), "board/memory.ld", "LENGTH = 256K",
                     "LENGTH = 128K")
    micro.build(d)

    class F405(QemuTransport):
        def command(self):  # USART3 is the third serial port
            return ["qemu-system-arm", "-M", "netduinoplus2", "-nographic", "-monitor", "none", "-serial", "null",
                    "-serial", "null", "-serial", "stdio", "-kernel", self.elf]

    t = F405("netduinoplus2", os.path.join(d, "build", "fw.elf"), log_path=os.path.join(d, "qemu.log"))
    t.open()
    with Session(transport=t, name="nucleo-f412zg on netduinoplus2") as s:
        assert (s.info().board, s.info().counter, s.info().cpu_hz) == ("nucleo-f412zg", "cycles", 16_000_000)
        x = np.arange(48, dtype=np.int8)
        s.set_input(x)
        assert s.run(2).runs == 2
        np.testing.assert_array_equal(s.get_output(), expected_output(x, 100))


def test_measure_one_call(built):
    x = np.arange(48, dtype=np.int8)
    y, st, rep = micro.measure(built("qemu-m7"), x, n=2)
    np.testing.assert_array_equal(y, expected_output(x, 100))
    assert st.runs == 2 and st.counter == "instructions" and rep.sram_bytes == st.sram_bytes


def test_several_inputs_and_outputs_are_addressed_one_after_the_other(tmp_path):
    """A stand-in with inputs of 700 and 500 B and outputs of 900, 7 and 300 B, apart in its arena:
    SET_INPUT and GET_OUTPUT chunks (max payload 1,024 B) cross from one tensor into the next."""
    cg = write_standin(str(tmp_path / "cg"), input_bytes=[700, 500], output_bytes=[900, 7, 300])
    d = micro.create_project(cg, "qemu-m4", str(tmp_path / "p"))
    micro.build(d)
    x = [np.random.default_rng(5).integers(-128, 128, n, dtype=np.int8) for n in (700, 500)]
    with micro.Session(d) as s:
        info = s.info()
        assert (info.num_inputs, info.num_outputs, info.input_bytes, info.output_bytes) == (2, 3, 1200, 1207)
        s.set_input(x)
        s.run(1)
        np.testing.assert_array_equal(s.get_output(), expected_output(x, 1207))
