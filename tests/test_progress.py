"""No silent stretch: while Spark works and the pipeline logs nothing, a heartbeat line says which
step runs, for how long, and Spark's own task progress."""

import logging
import time

import pytest

from prizeflow import progress

pytestmark = pytest.mark.spark


def test_a_quiet_spark_job_gets_progress_lines(spark, caplog):
    def _slow(batches):  # defined here: pickled by value for the Python workers
        for batch in batches:
            time.sleep(1.5)
            yield batch

    frame = spark.range(4).repartition(4)
    with caplog.at_level(logging.INFO):
        with progress.step("slow step"), progress.Heartbeat(spark, every=1.0):
            assert frame.mapInPandas(_slow, frame.schema).count() == 4
    lines = [r.getMessage() for r in caplog.records if r.name == "prizeflow.progress"]
    assert lines, "no heartbeat in a 3-second silent job"
    assert lines[0].startswith("slow step: running for ")
    assert any("/4 tasks of the running stages" in line for line in lines), lines


def test_no_heartbeat_while_the_pipeline_itself_logs(spark, caplog):
    chatty = logging.getLogger("prizeflow.training")
    with caplog.at_level(logging.INFO):
        with progress.Heartbeat(spark, every=1.0):
            for _ in range(6):
                chatty.info("grid point done")
                time.sleep(0.4)
    assert not [r for r in caplog.records if r.name == "prizeflow.progress"]


def test_the_grid_pools_are_declared_so_spark_does_not_warn(spark, tmp_path):
    """Each grid slot's FAIR pool comes from the allocation file prizeflow writes at start."""
    import xml.etree.ElementTree as ElementTree

    from prizeflow.config import load_config
    from prizeflow.spark import GRID_POOL_PREFIX, pool_file, session_settings

    config = load_config(None, ["train.parallelism=3"])
    path = session_settings(config, "4.2.0")["spark.scheduler.allocation.file"]
    assert path == pool_file(3)
    pools = ElementTree.parse(path).getroot().findall("pool")
    assert [p.get("name") for p in pools] == [f"{GRID_POOL_PREFIX}{i}" for i in range(3)]
    assert {p.findtext("weight") for p in pools} == {"1"}
    own = config.override(f"spark.conf.spark.scheduler.allocation.file={tmp_path / 'mine.xml'}")
    assert session_settings(own, "4.2.0")["spark.scheduler.allocation.file"] == str(
        tmp_path / "mine.xml")
    # The test session (train.parallelism 2) started with its pools declared.
    scheduler = spark.sparkContext._jsc.sc()
    assert scheduler.getPoolForName(f"{GRID_POOL_PREFIX}1").isDefined()
    assert not scheduler.getPoolForName(f"{GRID_POOL_PREFIX}2").isDefined()


def test_the_plan_truncation_warning_is_kept_out_of_the_terminal(spark):
    """Every train run's wide plans are truncated in debug strings; Spark warns about it at WARN.
    The session keeps the quiet loggers to errors, and only those. (That a truncation's warning
    then stays off a driver's stderr: the launched driver in the next test.)"""
    from prizeflow.spark import QUIET_LOGGERS

    jvm = spark.sparkContext._jvm
    manager = jvm.org.apache.logging.log4j.LogManager
    assert QUIET_LOGGERS
    for name in QUIET_LOGGERS:
        jvm.java.lang.Class.forName(name)  # the class that warns exists under that name
        quiet = manager.getLogger(name)
        assert not quiet.isWarnEnabled() and quiet.isErrorEnabled()
    assert manager.getLogger("org.apache.spark.ml.recommendation.ALS").isWarnEnabled()
    assert manager.getLogger("org.apache.spark.util.Utils").isWarnEnabled()


@pytest.mark.spark(process=True)  # and a driver of its own
def test_a_launched_driver_starts_quiet_and_still_shows_real_warnings(spark):
    """The driver JVM prizeflow launches reads prizeflow's log4j config: no note about Spark's
    default profile, no Hadoop native-library note; a Spark warning still reaches stderr. Its
    stderr passes through prizeflow: the JVM's incubator-module warning and netlib's native-BLAS
    note are kept to DEBUG, any other line passes as it is."""
    import subprocess
    import sys

    from processes import pipeline_env
    from prizeflow.spark import LOG4J_PROPERTY, log4j_file

    # The test session was launched that way too (after the suite's own JVM options).
    jvm = spark.sparkContext._jvm
    assert jvm.java.lang.System.getProperty(LOG4J_PROPERTY) == log4j_file().as_uri()
    code = (
        "from prizeflow.config import load_config\n"
        "from prizeflow.spark import get_spark\n"
        "import logging\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "logging.getLogger('prizeflow.driver_stderr').setLevel(logging.DEBUG)\n"
        "spark = get_spark(load_config('conf/local.yaml', ['spark.master=local[1]']))\n"
        "assert spark.range(3).count() == 3\n"
        "jvm = spark.sparkContext._jvm\n"
        "jvm.org.apache.logging.log4j.LogManager.getLogger("
        "'org.apache.spark.SparkContext').warn('a real warning')\n"
        # What MLlib's native BLAS loader prints on a machine without one (C code, not a logger).
        "jvm.java.lang.System.err.println('netlib-blas: JNI_OnLoad: dlopen(libblas.so.3) failed: "
        "libblas.so.3: cannot open shared object file: No such file or directory')\n"
        "jvm.java.lang.System.err.println('a line of the JVM nobody filters')\n"
        # A plan wider than spark.sql.debug.maxToStringFields (25): its debug string is cut, and
        # the JVM's first cut warns (once per JVM) at WARN, which must not reach stderr.
        "from pyspark.sql import functions as F\n"
        "wide = spark.range(1).select(*[F.lit(i).alias(f'c{i}') for i in range(40)])\n"
        "print('plan cut:', 'more fields' in wide._jdf.queryExecution().toString())\n"
        "spark.stop()\n")
    result = subprocess.run([sys.executable, "-c", code], env=pipeline_env(), text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert " WARN SparkContext: a real warning" in result.stderr
    assert "log4j profile" not in result.stderr and "Setting default log level" not in result.stderr
    assert "NativeCodeLoader" not in result.stderr
    assert "plan cut: True" in result.stdout
    assert "Truncated the string representation" not in result.stderr
    # The JVM's own lines outside any logger: the known ones only at DEBUG, the rest as they are.
    lines = result.stderr.splitlines()
    assert "a line of the JVM nobody filters" in lines
    assert ("DEBUG:prizeflow.driver_stderr:JVM: WARNING: Using incubator modules: "
            "jdk.incubator.vector") in lines
    assert ("DEBUG:prizeflow.driver_stderr:JVM: netlib-blas: JNI_OnLoad: dlopen(libblas.so.3) "
            "failed: libblas.so.3: cannot open shared object file: No such file or directory"
            ) in lines
    assert not [line for line in lines if line.startswith(("WARNING: Using incubator", "netlib-"))]


def test_the_session_started_from_remembered_jars_with_delta_on_them(spark):
    """The first start resolves spark.jars.packages and remembers the jar files; later starts
    use them and skip Ivy (and its resolution report on stderr)."""
    import os
    from urllib.parse import urlparse

    from prizeflow.spark import cached_jars

    settings = {"spark.jars.packages": spark.sparkContext.getConf().get("spark.jars.packages", "")}
    if not settings["spark.jars.packages"]:  # started from the remembered jars
        from prizeflow.config import load_config
        from prizeflow.spark import session_settings
        import pyspark

        settings = session_settings(load_config(None, []), pyspark.__version__)
    remembered = cached_jars(settings)
    assert remembered and all(os.path.isfile(urlparse(j).path) for j in remembered)
    assert any("delta-spark" in j for j in remembered)
    on_session = spark.sparkContext.getConf().get("spark.jars").split(",")
    assert set(remembered) <= set(on_session)


def test_on_a_terminal_a_bar_moves_in_place_and_makes_way_for_log_lines(spark):
    import os
    import pty

    def _slow(batches):
        for batch in batches:
            time.sleep(1.0)
            yield batch

    controller, terminal = pty.openpty()
    stream = os.fdopen(terminal, "w")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("LOG %(message)s"))
    chatty = logging.getLogger("prizeflow.training")
    root = logging.getLogger()
    root.addHandler(handler)  # where the CLI's stderr handler sits
    frame = spark.range(6).repartition(6)
    try:
        with progress.step("slow step"), progress.Heartbeat(spark, every=60.0, stream=stream):
            assert frame.mapInPandas(_slow, frame.schema).count() == 6
            chatty.warning("grid point done")
            time.sleep(1.5)
    finally:
        root.removeHandler(handler)
        stream.close()
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    text = shown.decode()
    bars = [part for part in text.split("\r\x1b[K") if part.startswith("slow step [")]
    assert bars, text
    assert any("/6 tasks" in bar for bar in bars), bars
    # The log line starts on a wiped line, never after a bar's text.
    assert "\r\x1b[KLOG grid point done" in text, text
    assert text.endswith("\r\x1b[K") or text.endswith("\n"), text[-80:]
    assert all(bar.split("]")[0].count("#") + bar.split("]")[0].count("-") == 24 for bar in bars)
