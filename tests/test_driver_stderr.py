"""The filter on a launched driver JVM's stderr, on a real pipe (no JVM: the launched one is in
test_progress.py)."""

import logging
import os
import select
import threading

from prizeflow import driver_stderr

INCUBATOR = b"WARNING: Using incubator modules: jdk.incubator.vector\n"
# As MLlib's native BLAS loader prints them on a machine without a system BLAS (make demo).
NETLIB = (b"netlib-lapack: JNI_OnLoad: dlopen(liblapack.so.3) failed: liblapack.so.3: cannot "
          b"open shared object file: No such file or directory\n")


def _through_filter(*writes: bytes, before_write=None) -> bytes:
    """Write the pieces into a pipe as a JVM would, and return what reaches the other side."""
    source_read, source_write = os.pipe()
    target_read, target_write = os.pipe()
    worker = threading.Thread(target=driver_stderr.pass_on,
                              args=(source_read, target_write, before_write), daemon=True)
    worker.start()
    received = []
    reader = threading.Thread(target=lambda: received.extend(iter(
        lambda: os.read(target_read, 1 << 16), b"")))
    reader.start()
    for piece in writes:
        os.write(source_write, piece)
    os.close(source_write)
    worker.join(10)
    os.close(target_write)
    reader.join(10)
    os.close(target_read)
    assert not worker.is_alive()
    return b"".join(received)


def test_known_lines_are_dropped_and_every_other_byte_passes_in_order(caplog):
    caplog.set_level(logging.DEBUG, logger="prizeflow.driver_stderr")
    out = _through_filter(INCUBATOR, b"26/11/29 19:00:01 WARN SparkContext: real\n",
                          NETLIB[:20], NETLIB[20:] + b"Exception in thread \"main\" boom\n",
                          b"\tat Main.main(Main.java:1)\n", b"no newline at the end")
    assert out == (b"26/11/29 19:00:01 WARN SparkContext: real\n"
                   b"Exception in thread \"main\" boom\n\tat Main.main(Main.java:1)\n"
                   b"no newline at the end")
    assert [r.getMessage() for r in caplog.records] == [
        "JVM: " + INCUBATOR.decode().strip(), "JVM: " + NETLIB.decode().strip()]


def test_only_whole_known_lines_are_dropped():
    lines = [b"INFO: WARNING: Using incubator modules: jdk.incubator.vector\n",
             b"netlib-blas: JNI_OnLoad: dlopen(libblas.so.3) failed, and something else too\n",
             b"netlib-blas: JNI_OnLoad: dlopen(libblas.so.3) worked\n",
             b"WARNING: Using incubator modules: jdk.incubator.vector, jdk.incubator.foreign\n"]
    assert _through_filter(*lines) == b"".join(lines)


def test_a_very_long_line_is_passed_on_before_it_ends():
    """Nothing known is that long: it reaches the terminal while the JVM is still writing it."""
    long_piece = b"x" * (driver_stderr.LONGEST_HELD_LINE + 10)
    source_read, source_write = os.pipe()
    target_read, target_write = os.pipe()
    worker = threading.Thread(target=driver_stderr.pass_on, args=(source_read, target_write),
                              daemon=True)
    worker.start()
    writer = threading.Thread(target=os.write, args=(source_write, long_piece), daemon=True)
    writer.start()
    received = b""
    while len(received) < len(long_piece):
        ready, _, _ = select.select([target_read], [], [], 10)
        assert ready, f"only {len(received)} bytes of an unfinished long line were passed on"
        received += os.read(target_read, 1 << 16)
    assert received == long_piece
    writer.join(10)
    os.write(source_write, b"y\n" + INCUBATOR)
    os.close(source_write)
    worker.join(10)
    os.close(target_write)
    assert os.read(target_read, 1000) == b"y\n"
    os.close(target_read)


def test_a_closed_terminal_does_not_stop_the_reading():
    """If stderr cannot be written, the JVM's side is still drained to its end."""
    source_read, source_write = os.pipe()
    target_read, target_write = os.pipe()
    os.close(target_read)  # writing to target_write now fails (EPIPE)
    worker = threading.Thread(target=driver_stderr.pass_on, args=(source_read, target_write),
                              daemon=True)
    worker.start()

    def write_more_than_a_pipe_holds():  # blocks for good if nobody reads
        for _ in range(200):
            os.write(source_write, b"z" * 1000 + b"\n")
        os.close(source_write)

    writer = threading.Thread(target=write_more_than_a_pipe_holds, daemon=True)
    writer.start()
    writer.join(10)
    worker.join(10)
    os.close(target_write)
    assert not writer.is_alive() and not worker.is_alive()


def test_a_failing_bar_does_not_stop_the_copying():
    def broken_bar():
        raise ValueError("I/O operation on closed file")

    assert _through_filter(b"first\n", b"second\n", before_write=broken_bar) == b"first\nsecond\n"


def test_the_progress_bar_makes_way_before_the_jvm_writes():
    """The bar is wiped before a JVM line, as before a log line; not for a dropped line."""
    calls = []
    assert _through_filter(INCUBATOR, before_write=lambda: calls.append("wipe")) == b""
    assert calls == []
    line = b"26/11/29 19:00:01 WARN Executor: real\n"
    assert _through_filter(line, before_write=lambda: calls.append("wipe")) == line
    assert calls == ["wipe"]
