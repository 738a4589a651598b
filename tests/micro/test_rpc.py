"""Host RPC against a fake serial device (no board, no QEMU): framing, retries, repeats answered
from the board's store, sessions, one-line errors. Injected faults: tests/reliability."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from serial.tools import list_ports

from tvm_patchnet import micro
from tvm_patchnet.micro.errors import BoardReset
from tvm_patchnet.micro.rpc import CMD_INFO, CMD_RUN, CMD_SET_INPUT, PROTO_VERSION, RpcClient, crc16, encode
from tvm_patchnet.micro.transport import SerialTransport, find_stlink_port

from .fake_device import FakeDevice, FakeSerial
from .standin import expected_output


def test_crc16_ccitt_false_check_value():
    assert crc16(b"123456789") == 0x29B1  # the catalogue check value of CRC-16/CCITT-FALSE


def test_frame_layout():
    f = encode(0x03, 7, b"\x01\x02")
    assert f[:2] == b"\xa5\x5a" and f[2:6] == b"\x03\x07\x02\x00" and f[6:8] == b"\x01\x02"
    assert int.from_bytes(f[8:], "little") == crc16(f[2:8])


def test_session_over_fake_serial(fake):
    s, _ = fake()
    info = s.info()
    assert (info.board, info.counter, info.input_bytes, info.output_bytes) == ("nucleo-f412zg", "cycles", 48, 100)
    x = np.arange(48, dtype=np.int8) - 20
    s.set_input(x)
    st = s.run(4)
    assert (st.counter, st.runs, st.total, st.per_run, st.min, st.max) == ("cycles", 4, 4 * 1234, 1234.0, 1234, 1234)
    assert st.sram_bytes == 0 + 1500 + 300
    np.testing.assert_array_equal(s.get_output(), expected_output(x, 100))
    assert s.calibrate(10) == 37
    assert FakeSerial.opened == [("/dev/fake0", 921600)]


def test_large_input_is_chunked(fake):
    s, dev = fake(input_bytes=5000, output_bytes=3000)
    x = (np.arange(5000) % 251).astype(np.int8)
    s.set_input(x)
    assert bytes(dev.inp) == x.tobytes()
    s.run(1)
    np.testing.assert_array_equal(s.get_output(), expected_output(x, 3000))


@pytest.mark.parametrize("fault", [{"drop": 2}, {"corrupt": 2}, {"nak": 2}, {"stale": True}])
def test_retries_recover(fake, fault):
    s, _ = fake(**fault)
    assert s.info().board == "nucleo-f412zg"
    assert s.ping(b"abc") == b"abc"


def test_not_answering_is_one_line(fake):
    s, dev = fake(drop=100)
    with pytest.raises(micro.DeviceNotAnswering) as e:
        s.info()
    msg = str(e.value)
    assert "\n" not in msg and "not answering INFO after 3 attempts" in msg and "nucleo-f412zg" in msg
    assert dev.requests == 3


def test_persistent_crc_errors(fake):
    s, _ = fake(corrupt=100)
    with pytest.raises(micro.CrcError, match="CRC error on all 3 attempts"):
        s.info()


def test_wrong_input_size(fake):
    s, _ = fake()
    with pytest.raises(micro.MicroError, match="input has 3 bytes, the model takes 48"):
        s.set_input(b"abc")


def test_fault_frame_becomes_does_not_fit(fake):
    s, _ = fake(fault_on_run=True)
    with pytest.raises(micro.DoesNotFit, match="stack overflow: the run needs more than the 4,704 B"):
        s.run(1)


def test_unknown_command_refused(fake):
    s, _ = fake()
    with pytest.raises(micro.MicroError, match="refused .*unknown command"):
        s.rpc.call(0x42)


def test_no_stlink_port(monkeypatch):
    monkeypatch.setattr(list_ports, "comports", list)
    with pytest.raises(micro.BoardNotFound, match="no ST-LINK virtual COM port found"):
        find_stlink_port()


def test_serial_port_missing():
    t = SerialTransport("/dev/does-not-exist-patchnet", 115200)
    with pytest.raises(micro.BoardNotFound, match="cannot open serial port /dev/does-not-exist-patchnet"):
        t.open()


def test_rpc_client_timeout_is_quick():
    class Silent:
        def write(self, data, timeout):
            pass

        def read(self, n, timeout):
            return b""

    with pytest.raises(micro.DeviceNotAnswering, match="PING after 2 attempts"):
        RpcClient(Silent(), timeout=0.01, retries=1).call(0)


class Recording:
    """A transport that records the frames the host writes and passes them to a FakeDevice."""

    def __init__(self, dev):
        self.dev, self.frames, self.rx = dev, [], b""

    def write(self, data, timeout):
        self.frames.append(bytes(data))
        self.rx += self.dev.feed(bytes(data))

    def read(self, n, timeout):
        data, self.rx = self.rx[:n], self.rx[n:]
        return data

    def close(self):
        pass


def test_retry_resends_the_same_frame_and_new_requests_get_a_fresh_seq():
    rec = Recording(FakeDevice(drop=2))
    s = micro.Session(transport=rec, timeout=0.01, retries=3)
    s.ping(b"a")
    s.ping(b"b")
    assert rec.frames[0] == rec.frames[1] == rec.frames[2]  # two dropped, the third answered
    assert rec.frames[3][3] == (rec.frames[0][3] + 1) & 0xFF


def test_repeated_run_gets_the_stored_answer():
    """A repeat of the last RUN (same seq and bytes) is answered again without running again."""
    dev = FakeDevice(consume=True)
    dev.feed(encode(CMD_INFO, 1))
    dev.feed(encode(CMD_SET_INPUT, 2, struct.pack("<I", 0) + bytes(range(48))))
    run = encode(CMD_RUN, 3, struct.pack("<I", 1))
    first, again = dev.feed(run), dev.feed(run)
    assert dev.executed == 1 and first.endswith(again) and len(first) > len(again)  # again: no STARTED
    dev.feed(encode(CMD_RUN, 4, struct.pack("<I", 1)))  # a new request runs
    assert dev.executed == 2


def test_old_firmware_is_refused():
    rec = Recording(FakeDevice(proto=1))
    with pytest.raises(micro.MicroError) as e:
        micro.Session(transport=rec, name="qemu-m4").info()
    assert str(e.value) == f"qemu-m4: firmware speaks protocol 1, host {PROTO_VERSION}: rebuild the project"


def test_reset_between_requests_is_an_error(fake):
    s, dev = fake(consume=True)
    s.set_input(np.zeros(48, np.int8))
    dev.reset()  # e.g. a watchdog: no fault frame, the arena is gone
    with pytest.raises(BoardReset, match="^nucleo-f412zg: the board reset during the session: RUN refused"):
        s.run(1)
    with pytest.raises(BoardReset, match="GET_OUTPUT refused .*set the input again"):
        s.get_output()
    x = np.arange(48, dtype=np.int8)
    s.set_input(x)  # opens a new session
    s.run(1)
    np.testing.assert_array_equal(s.get_output(), expected_output(x, 100))


def test_fault_then_output_is_an_error(fake):
    s, _ = fake(fault_on_run=True)
    with pytest.raises(micro.DoesNotFit):
        s.run(1)
    with pytest.raises(BoardReset):
        s.get_output()


@pytest.mark.parametrize("bad", [0, -1.0])
def test_timeouts_must_be_positive(fake, bad):
    s, _ = fake()
    with pytest.raises(micro.MicroError, match="must be > 0 s"):
        s.run(1, timeout=bad)
    with pytest.raises(micro.MicroError, match="run_timeout must be > 0 s"):
        micro.Session(transport=s.transport, run_timeout=bad)
