"""Building the SparkSession from config, with Delta Lake enabled.

Three ways to get Delta on the classpath (``spark.delta_source``):
- ``packages``: Maven coordinate through ``spark.jars.packages`` (resolved at JVM start);
- ``jars``: local jar files listed in ``spark.delta_jars`` (air-gapped clusters);
- ``builtin``: the runtime already ships Delta (Databricks); nothing is added.

``spark.packages`` adds Maven coordinates beside Delta's (a filesystem connector such as
``hadoop-aws`` for ``s3a://`` on a machine that lacks it).

A session that already exists (spark-submit, Databricks, a notebook) is reused: a master given to
spark-submit always wins over ``spark.master`` in conf.

With ``spark.remote`` (or ``SPARK_REMOTE``) the session is a Spark Connect client: no local JVM,
no ``sparkContext``; the server brings Delta and its own static settings, and only the runtime
settings of ``spark.conf`` are applied. :func:`prizeflow.sessions.is_connect` tells the two kinds apart wherever a
job needs something only classic Spark has.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from prizeflow import driver_stderr, partitions
from prizeflow.config import Config
from prizeflow.errors import JobError
from prizeflow.private_files import content_file, is_private_folder, write_whole
from prizeflow.secrets import redact_text, spark_redaction_settings
from prizeflow.sessions import connect_state, forget, is_connect

logger = logging.getLogger(__name__)

DELTA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
SHUFFLE_PARTITIONS_PER_CORE = 4
# The training grid's FAIR pools, one per grid slot (``train.parallelism``): declared in an
# allocation file at start, so Spark does not warn that each is "not configured".
GRID_POOL_PREFIX = "prizeflow-grid-"
# Loggers whose warnings a user cannot act on, kept to errors in the driver's JVM (where a local
# master's executors run too). SparkStringUtils says a plan's debug string was truncated: MLlib's
# wide plans do that in every train run, and nothing is lost but a log line's length.
QUIET_LOGGERS = ("org.apache.spark.util.SparkStringUtils",)
LOOPBACK = "127.0.0.1"
LOOPBACK_SETTINGS = ("spark.driver.bindAddress", "spark.driver.host")
UI_ENABLED = "spark.ui.enabled"


def delta_package(spark_version: str) -> str:
    """Maven coordinate of the Delta jar matching a Spark ``major.minor``."""
    major_minor = ".".join(spark_version.split(".")[:2])
    return f"io.delta:delta-spark_{major_minor}_{SCALA_VERSION}:{DELTA_VERSION}"


def session_settings(config: Config, spark_version: str) -> dict[str, str]:
    """The Spark settings prizeflow asks for, before the user's ``spark.conf`` on top."""
    spark_conf = config.spark
    settings: dict[str, str] = {
        "spark.app.name": spark_conf.app_name,
        "spark.ui.showConsoleProgress": "false",
        # The training grid fits several models at once from driver threads; FAIR pools let
        # them share the executors instead of queueing behind each other.
        "spark.scheduler.mode": "FAIR",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if "spark.scheduler.allocation.file" not in spark_conf.conf:
        settings["spark.scheduler.allocation.file"] = pool_file(config.train.parallelism)
    source = spark_conf.delta_source
    if source != "builtin":
        settings["spark.sql.extensions"] = DELTA_EXTENSION
        settings["spark.sql.catalog.spark_catalog"] = DELTA_CATALOG
    packages = [delta_package(spark_version)] if source == "packages" else []
    packages += spark_conf.packages
    if packages:
        settings["spark.jars.packages"] = ",".join(packages)
    if source == "jars":
        jars = spark_conf.delta_jars
        if not jars:
            raise ValueError("spark.delta_source is 'jars' but spark.delta_jars is empty")
        missing = [j for j in jars if not os.path.exists(j)]
        if missing:
            raise FileNotFoundError(f"spark.delta_jars: jar not found: {missing[0]}")
        settings["spark.jars"] = ",".join(jars)
    settings.update({str(k): str(v) for k, v in spark_conf.conf.items()})
    # Spark hides in its UI and event logs what prizeflow hides in its own output.
    settings.update(spark_redaction_settings(settings))
    # Read only by a driver JVM that prizeflow launches (a running one keeps its config); the
    # user's own options come first, and a log4j config of theirs wins.
    options = settings.get("spark.driver.extraJavaOptions", "")
    if LOG4J_PROPERTY not in options:
        settings["spark.driver.extraJavaOptions"] = (
            f"{options} -D{LOG4J_PROPERTY}={log4j_file().as_uri()}".strip())
    return settings


def jar_cache_file(settings: dict[str, str]) -> Path:
    """Where the jar files that ``spark.jars.packages`` resolved to are remembered: one file per
    packages + repositories + Ivy settings, under ``$XDG_CACHE_HOME/prizeflow`` (~/.cache)."""
    import hashlib

    key = "\n".join(settings.get(k, "") for k in (
        "spark.jars.packages", "spark.jars.repositories", "spark.jars.ivySettings",
        "spark.jars.ivy", "spark.jars.excludes"))
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prizeflow"
    return root / f"jars-{hashlib.sha256(key.encode()).hexdigest()[:16]}.txt"


NOT_WRITABLE_BY_OTHERS = 0o022


def cached_jars(settings: dict[str, str]) -> list[str] | None:
    """The remembered jar files of these packages, or None (never resolved here, a file is gone,
    or the cache folder is not this user's alone to write: the list decides the JVM's classpath, so
    one another user could write is not trusted; Ivy resolves again)."""
    from urllib.parse import urlparse

    path = jar_cache_file(settings)
    if not is_private_folder(path.parent, closed=NOT_WRITABLE_BY_OTHERS):
        return None
    try:
        jars = path.read_text(encoding="utf-8").split()
    except OSError:
        return None
    if not jars or not all(os.path.isfile(urlparse(j).path or j) for j in jars):
        return None
    return jars


def remember_jars(settings: dict[str, str], jars: str) -> None:
    """Write the jar files Spark resolved the packages to (``spark.jars`` of the session
    started with them), minus any jar the config listed itself, in a cache folder created
    ``0700``."""
    own = set(filter(None, settings.get("spark.jars", "").split(",")))
    resolved = [j for j in jars.split(",") if j and j not in own]
    if not resolved:
        return
    path = jar_cache_file(settings)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if is_private_folder(path.parent, closed=NOT_WRITABLE_BY_OTHERS):
            write_whole(path, ("\n".join(resolved) + "\n").encode("utf-8"))
    except OSError as exc:  # a read-only home only costs the next start a resolution
        logger.debug("could not remember the resolved jars in %s: %s", path, exc)


def pool_file(slots: int) -> str:
    """An allocation file declaring the grid's pools (equal weight, FIFO within each), in this
    user's private folder (:mod:`prizeflow.private_files`); the driver reads it at start."""
    pools = "".join(f'  <pool name="{GRID_POOL_PREFIX}{slot}"><schedulingMode>FIFO'
                    "</schedulingMode><weight>1</weight><minShare>0</minShare></pool>\n"
                    for slot in range(slots))
    return str(content_file("prizeflow-pools", ".xml",
                             f'<?xml version="1.0"?>\n<allocations>\n{pools}</allocations>\n'))


# The driver JVM's log4j 2 config when prizeflow launches it: Spark's own defaults (stderr, the same
# pattern, its quiet third-party loggers) at WARN from the start, so Spark does not print its
# three-line note about the default profile, and Hadoop's start-up note that it has no native
# library (it uses its Java code, as everywhere prizeflow runs) is kept to errors.
LOG4J_CONFIG = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = warn
logger.jetty2.name = org.sparkproject.jetty.util.component.AbstractLifeCycle
logger.jetty2.level = error
logger.metastore.name = org.apache.hadoop.hive.metastore.RetryingHMSHandler
logger.metastore.level = fatal
logger.metastore2.name = org.apache.hadoop.hive.metastore.ObjectStore
logger.metastore2.level = error
logger.parquet.name = org.apache.parquet.CorruptStatistics
logger.parquet.level = error
logger.parquet2.name = parquet.CorruptStatistics
logger.parquet2.level = error
logger.hadoopnative.name = org.apache.hadoop.util.NativeCodeLoader
logger.hadoopnative.level = error
"""
LOG4J_PROPERTY = "log4j2.configurationFile"


def log4j_file() -> Path:
    return content_file("prizeflow-log4j2", ".properties", LOG4J_CONFIG)


def remote_url(config: Config) -> str | None:
    """The Spark Connect endpoint asked for: ``spark.remote``, else ``SPARK_REMOTE``."""
    return config.spark.remote or os.environ.get("SPARK_REMOTE") or None


def describe(spark) -> str:
    if is_connect(spark):
        return "Spark Connect"
    return f"master {spark.sparkContext.master}"


def get_spark(config: Config):
    """Return the active SparkSession or build one from config."""
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession
    import pyspark

    active = SparkSession.getActiveSession()
    if active is not None:
        logger.info("reusing the active SparkSession (%s)", describe(active))
        return active
    remote = remote_url(config)
    if remote:
        return _connect(config, remote)

    options: dict[str, str] = {}
    # Under spark-submit the JVM is already up with the submitted master; the Python process
    # only connects to it (PySpark finds it through PYSPARK_GATEWAY_PORT).
    if "PYSPARK_GATEWAY_PORT" in os.environ and SparkContext._jvm is None:
        # spark-submit's JVM is up: connect to it, so its settings can be read.
        SparkContext._ensure_initialized()
    launched = SparkConf()
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ or launched.contains("spark.master")
    if not submitted and config.spark.master:
        options["spark.master"] = config.spark.master
        if config.spark.master.startswith("local"):
            # Local Python workers (mapInPandas) must run this interpreter, with its packages,
            # not whatever `python3` is first on the PATH. PySpark reads only the environment.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            # The JVM reads it at launch: no "hostname resolves to a loopback address" warning,
            # and its web UI (when enabled) binds to it instead of every interface.
            os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    master = launched.get("spark.master", "") if submitted else config.spark.master or ""
    if master.startswith("local"):
        options.update(_loopback_options(config, launched, submitted))
    settings = session_settings(config, pyspark.__version__)
    packages = settings.get("spark.jars.packages") if not submitted else None
    resolved = cached_jars(settings) if packages else None
    if resolved:
        # Resolved before: start from the jar files, without Ivy's resolution (and its report).
        del settings["spark.jars.packages"]
        settings["spark.jars"] = ",".join([settings["spark.jars"], *resolved]
                                          if settings.get("spark.jars") else resolved)
    options.update(settings)
    if not submitted:
        _launch_driver(options)
    spark = SparkSession.builder.config(map=options).getOrCreate()
    if packages and not resolved:
        remember_jars(settings, spark.sparkContext.getConf().get("spark.jars", ""))
    spark.sparkContext.setLogLevel("WARN")
    _quiet_known_warnings(spark)
    _follow_cores(spark, config)
    logger.info("SparkSession up: %s, Spark %s", describe(spark), spark.version)
    return spark


def _loopback_options(config: Config, launched, submitted: bool) -> dict[str, str]:
    """Nothing outside this machine needs to reach a local driver: its RPC and block manager
    bind to loopback however it was launched (spark-submit starts the JVM, but the driver's
    services start with this session). A setting of the user's (``spark.conf``, spark-submit
    ``--conf``) wins. The web UI binds where the JVM's ``SPARK_LOCAL_IP`` says, else on every
    interface: a JVM that spark-submit started without it gets no UI unless asked for."""
    def user_set(key: str) -> bool:
        return key in config.spark.conf or launched.contains(key)

    options = {key: LOOPBACK for key in LOOPBACK_SETTINGS if not user_set(key)}
    if submitted and not user_set(UI_ENABLED):
        from pyspark import SparkContext

        local_ip = SparkContext._jvm.java.lang.System.getenv("SPARK_LOCAL_IP")
        if not _is_loopback(local_ip):
            logger.info("spark-submit started the JVM without SPARK_LOCAL_IP=%s: the Spark UI "
                        "would listen on every interface, so it is off (export SPARK_LOCAL_IP="
                        "%s before spark-submit, or set %s)", LOOPBACK, LOOPBACK, UI_ENABLED)
            options[UI_ENABLED] = "false"
    return options


def _is_loopback(address: str | None) -> bool:
    import ipaddress

    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def _launch_driver(options: dict[str, str]) -> None:
    """Start the driver JVM for ``options`` with its stderr filtered (:mod:`driver_stderr`),
    unless this process already has one (a stopped session keeps its JVM for the next)."""
    from pyspark import SparkConf, SparkContext

    if SparkContext._gateway is not None:
        return
    conf = SparkConf().setAll(options.items())
    SparkContext(conf=conf, gateway=driver_stderr.launch_gateway(conf))


def _quiet_known_warnings(spark) -> None:
    """Keep :data:`QUIET_LOGGERS` to errors; the JVM's logging config is left as it is
    otherwise."""
    jvm = spark.sparkContext._jvm
    error = jvm.org.apache.logging.log4j.Level.ERROR
    for name in QUIET_LOGGERS:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, error)


def _follow_cores(spark, config: Config) -> None:
    """Spark's fixed default of 200 shuffle partitions is far too many tasks for a laptop and too
    few for a big cluster: unless ``spark.conf`` sets it, follow the cores (AQE still coalesces
    small shuffles). Likewise Delta's 50 partitions for rebuilding a table's state from its log
    (every read, write and RESTORE does): prizeflow's tables hold hundreds of files, not
    millions, and 50 tasks cost local[2] about a second each time (an ingest of a small change
    spent over half its time there)."""
    cores = partitions.parallelism(spark)
    if "spark.sql.shuffle.partitions" not in config.spark.conf:
        spark.conf.set("spark.sql.shuffle.partitions", str(SHUFFLE_PARTITIONS_PER_CORE * cores))
    if "spark.databricks.delta.snapshotPartitions" not in config.spark.conf:
        spark.conf.set("spark.databricks.delta.snapshotPartitions", str(cores))


def release(spark) -> None:
    """End a Spark Connect session this process opened (the server frees its cached models and
    frames). Classic sessions and sessions found already open are left as they are."""
    if spark is None or not is_connect(spark) or not connect_state(spark).opened_here:
        return
    spark.stop()
    forget(spark)


# Settings prizeflow asks of a Connect session: the runtime ones only (the server owns the rest).
CONNECT_SETTINGS = {"spark.sql.execution.arrow.pyspark.enabled": "true"}


def _connect(config: Config, remote: str):
    """A Spark Connect session on ``remote``, with this prizeflow shipped to its Python workers
    and the runtime settings of ``spark.conf`` applied; static ones are named and skipped."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import SparkSession

    check_reachable(remote)
    spark = SparkSession.builder.remote(remote).getOrCreate()
    connect_state(spark).opened_here = True
    settings = {**CONNECT_SETTINGS, **{str(k): str(v) for k, v in config.spark.conf.items()}}
    skipped = []
    for key, value in settings.items():
        try:
            spark.conf.set(key, value)
        except AnalysisException:  # CANNOT_MODIFY_CONFIG: static, or the server forbids it
            skipped.append(key)
    if skipped:
        logger.warning("Spark Connect: not applied (the server's own settings decide): %s",
                       ", ".join(sorted(skipped)))
    _ship_package(spark)
    _follow_cores(spark, config)
    logger.info("SparkSession up: Spark Connect at %s, Spark %s", redact_text(remote),
                spark.version)
    return spark


def check_reachable(remote: str, timeout: float = 10.0) -> None:
    """Fail in seconds, naming the endpoint, when nothing listens there (pyspark's client
    would retry for minutes before saying so)."""
    import socket
    from urllib.parse import urlparse

    if remote.startswith("local"):
        return  # pyspark starts a local Connect server itself
    parsed = urlparse(remote.split(";", 1)[0].rstrip("/"))
    if parsed.scheme != "sc" or not parsed.hostname:
        raise JobError(f"spark.remote {redact_text(remote)!r} is not a Spark Connect URL "
                       "(sc://host:port)")
    port = parsed.port or 15002
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise JobError(f"cannot reach the Spark Connect server at sc://{parsed.hostname}:{port}: "
                       f"{exc.strerror or type(exc).__name__}") from None


def _ship_package(spark) -> None:
    """Send this prizeflow as a zip to the server's Python workers (the mapInPandas stages run
    there), so they run the client's code whatever the server has installed."""
    import tempfile
    import zipfile

    import prizeflow

    package = Path(prizeflow.__file__).parent
    folder = Path(tempfile.mkdtemp(prefix="prizeflow-connect-"))
    archive = folder / "prizeflow.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for source in sorted(package.rglob("*.py")):
            zipped.write(source, Path("prizeflow") / source.relative_to(package))
    try:
        spark.addArtifacts(str(archive), pyfile=True)
    except Exception as exc:  # noqa: BLE001 - servers may refuse artifacts; installed code runs
        logger.warning("Spark Connect: could not ship prizeflow to the server's Python workers "
                       "(%s); they use the prizeflow installed there", type(exc).__name__)
    finally:
        archive.unlink(missing_ok=True)
        folder.rmdir()
