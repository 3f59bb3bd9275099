"""What kind a SparkSession is (classic or Spark Connect) and the state prizeflow keeps per
Connect session.

A leaf module: it imports nothing from prizeflow and nothing from pyspark, so every module that
must tell the two kinds apart (session building, partitions, progress, ALS) can import it at the
top without forming a circle.

A Connect client has no ``sparkContext``, so a few things classic Spark answers from the JVM are
kept here, one :class:`ConnectState` per session id: whether this process opened the session (and
so may end it), the server's default parallelism once measured, the progress handler registered
on it, and the fitted models held until the session ends (see :meth:`ConnectState.keep`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def is_connect(spark: Any) -> bool:
    """True for a Spark Connect session (no ``sparkContext``, no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


@dataclass
class ConnectState:
    """prizeflow's state for one Connect session."""

    opened_here: bool = False
    parallelism: int | None = None
    progress_handler: Any = None
    # Over Spark Connect, pyspark 4.2 deletes a fitted model's server-side copy from the model's
    # finalizer with a blocking RPC, which can hang against another RPC of the same client
    # (SPARK-57655). Fitted models are held here instead; ending the session frees them all.
    models: list[Any] = field(default_factory=list)

    def keep(self, model: Any) -> None:
        self.models.append(model)


_STATES: dict[str, ConnectState] = {}


def connect_state(spark: Any) -> ConnectState:
    """The state of Connect session ``spark`` (created on first use)."""
    return _STATES.setdefault(spark.session_id, ConnectState())


def forget(spark: Any) -> None:
    """Drop a Connect session's state once it has ended (its models go without an RPC)."""
    _STATES.pop(spark.session_id, None)
