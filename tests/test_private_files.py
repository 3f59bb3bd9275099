"""Nothing planted is used: prizeflow's own files (the driver's log4j config, the FAIR pool file,
the remembered jar list) live in a folder only this user can use, and a file there is used only
when it holds exactly what prizeflow would write. And a local driver listens on loopback only,
however it is launched. Real files, real processes; the attacks are the ones issue 29 names."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from prizeflow import private_files, spark as spark_module
from prizeflow.spark import LOG4J_CONFIG
from processes import BIN, is_loopback, listening_sockets, pipeline_env

PROJECT = Path(__file__).resolve().parents[1]
NOBODY = 65534


def _log4j_name() -> str:
    return f"prizeflow-log4j2-{hashlib.sha256(LOG4J_CONFIG.encode()).hexdigest()[:12]}.properties"


def _stealing_config(stolen: Path) -> str:
    """A log4j config that copies every log line into ``stolen``: what an attacker plants."""
    return ("rootLogger.level = info\nrootLogger.appenderRef.f.ref = f\n"
            "appender.f.type = File\nappender.f.name = f\n"
            f"appender.f.fileName = {stolen}\nappender.f.layout.type = PatternLayout\n"
            "appender.f.layout.pattern = %m%n\n")


@pytest.fixture
def temp_folder(tmp_path, monkeypatch):
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(folder))
    monkeypatch.setattr(private_files, "_RUN_FOLDER", None)
    return folder


def _is_private(path: Path) -> bool:
    info = os.lstat(path)
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and info.st_mode & 0o077 == 0


def test_own_files_live_in_a_folder_created_private(temp_folder):
    path = spark_module.log4j_file()
    assert path.parent == temp_folder / f"prizeflow-{os.geteuid()}"
    assert _is_private(path.parent) and path.read_text() == LOG4J_CONFIG


def test_a_file_with_other_content_in_the_private_folder_is_replaced(temp_folder, tmp_path):
    folder = temp_folder / f"prizeflow-{os.geteuid()}"
    folder.mkdir(mode=0o700)
    planted = folder / _log4j_name()
    planted.write_text(_stealing_config(tmp_path / "stolen.log"))
    assert spark_module.log4j_file() == planted and planted.read_text() == LOG4J_CONFIG
    # A symlink in its place is replaced, not written through.
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    planted.unlink()
    planted.symlink_to(target)
    assert spark_module.log4j_file() == planted and not planted.is_symlink()
    assert target.read_text() == "keep me" and planted.read_text() == LOG4J_CONFIG


@pytest.mark.parametrize("attack", ["open_to_everyone", "owned_by_another_user", "a_symlink"])
def test_a_folder_someone_else_prepared_is_not_used(temp_folder, tmp_path, attack):
    shared = temp_folder / f"prizeflow-{os.geteuid()}"
    if attack == "a_symlink":
        elsewhere = tmp_path / "attacker"
        elsewhere.mkdir(mode=0o700)
        shared.symlink_to(elsewhere)
    else:
        shared.mkdir(mode=0o700)
    (shared / _log4j_name()).write_text(_stealing_config(tmp_path / "stolen.log"))
    if attack == "open_to_everyone":
        shared.chmod(0o777)
    elif attack == "owned_by_another_user":
        if os.geteuid() != 0:
            pytest.skip("needs root to give a folder to another user")
        os.chown(shared, NOBODY, NOBODY)
    path = spark_module.log4j_file()
    assert path.parent != shared and path.parent.parent == temp_folder
    assert path.parent.name.startswith("prizeflow-run-") and _is_private(path.parent)
    assert path.read_text() == LOG4J_CONFIG
    # The pool file goes to the same run folder.
    assert Path(spark_module.pool_file(2)).parent == path.parent


def test_a_jar_list_others_can_write_is_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    settings = {"spark.jars.packages": "io.delta:delta-spark_4.2_2.13:4.4.0"}
    jar = tmp_path / "evil.jar"
    jar.write_bytes(b"PK")
    spark_module.remember_jars(settings, str(jar))
    cache = spark_module.jar_cache_file(settings)
    assert cache.parent.stat().st_mode & 0o077 == 0
    assert spark_module.cached_jars(settings) == [str(jar)]
    cache.parent.chmod(0o777)
    assert spark_module.cached_jars(settings) is None


def _hold_session(command: list[str], conf: Path, env: dict[str, str], cwd: Path):
    """Start a driver that holds its session; (its summary, its listening sockets, its log)
    once it is up."""
    import time

    out, log = cwd / "summary.json", cwd / "driver.log"
    with open(log, "w") as output:
        # Output to a file: a pipe nobody reads would fill and stop the JVM.
        process = subprocess.Popen(
            command + [str(PROJECT / "tests" / "session_holder.py"), str(conf), str(out)],
            stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        deadline = time.monotonic() + 240
        while not out.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        sockets = listening_sockets(process.pid)
    finally:
        out.with_name(out.name + ".release").touch()
    process.wait(timeout=120)
    text = log.read_text(errors="replace")
    assert process.returncode == 0 and out.exists(), text[-3000:]
    return json.loads(out.read_text()), sockets, text


@pytest.mark.spark(process=True)
def test_a_prizeflow_launched_driver_uses_no_planted_file_and_listens_on_loopback(tmp_path):
    """The attack: another local user plants a log4j config that copies the driver's log into a
    file of theirs, both where the old name was (the temp folder) and in an open
    ``prizeflow-<uid>`` folder. The driver uses neither, and every socket of the process tree
    (the driver's RPC, block manager, web UI, the Py4J gateway) listens on loopback."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    stolen = tmp_path / "stolen.log"
    (temp / _log4j_name()).write_text(_stealing_config(stolen))
    shared = temp / f"prizeflow-{os.geteuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / _log4j_name()).write_text(_stealing_config(stolen))
    conf = tmp_path / "conf.yaml"
    conf.write_text("spark:\n  master: local[2]\n  conf:\n    spark.ui.enabled: 'true'\n")
    summary, sockets, _ = _hold_session([sys.executable], conf, pipeline_env(TMPDIR=str(temp)),
                                        tmp_path)
    used = Path(summary["log4j"].removeprefix("file://"))
    assert used.parent.parent == temp and used.parent.name.startswith("prizeflow-run-")
    assert summary["log4j_text"] == LOG4J_CONFIG
    assert not stolen.exists()
    assert summary["bindAddress"] == "127.0.0.1" and summary["host"] == "127.0.0.1"
    assert len(sockets) >= 4 and all(is_loopback(address) for address, _ in sockets), sockets


@pytest.mark.deploy
@pytest.mark.spark(process=True)
def test_a_spark_submit_driver_in_local_mode_listens_on_loopback(tmp_path):
    """spark-submit starts the JVM (the DAG's launch): the driver's services still bind to
    loopback, and the web UI, which would listen on every interface without SPARK_LOCAL_IP in
    the JVM's environment, stays off."""
    from prizeflow.spark import delta_package
    import pyspark

    conf = tmp_path / "conf.yaml"
    conf.write_text("spark:\n  master: local[2]\n")
    env = pipeline_env()
    env.pop("SPARK_LOCAL_IP", None)
    summary, sockets, _ = _hold_session(
        [str(BIN / "spark-submit"), "--master", "local[2]", "--packages",
         delta_package(pyspark.__version__)], conf, env, tmp_path)
    assert summary["bindAddress"] == "127.0.0.1" and summary["host"] == "127.0.0.1"
    assert sockets and all(is_loopback(address) for address, _ in sockets), sockets
