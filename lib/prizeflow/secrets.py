"""Keeping credentials inside the process: what looks like a secret is replaced by ``***`` in
everything prizeflow writes out (logs, error lines, the config artifact, MLflow params and tags,
the report).

Two kinds: credentials in a URI (``https://user:token@host``, ``s3a://KEY:SECRET@bucket``,
``?sig=...`` or ``?token=...`` query values, ``sc://host/;token=...``) and the values of settings whose name says secret
(``*secret*``, ``*password*``, ``*token*``, ``*credential*``, ``*.key`` such as
``spark.hadoop.fs.s3a.secret.key`` or ``fs.azure.account.key.<account>``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"
SECRET_NAME = re.compile(r"secret|password|passwd|token|credential|(^|[._-])key$|"
                         r"access[._-]?key|account\.key", re.IGNORECASE)
# scheme://user[:password]@host -> scheme://***@host
URI_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")
# ... and Spark Connect's ``sc://host:port/;token=...`` parameters.
QUERY_SECRET = re.compile(r"(?P<name>[?&;](?:sig|token|access_token|secret|password|"
                          r"x-amz-signature|x-amz-security-token)=)(?P<value>[^&;\s'\"]+)",
                          re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def redact_text(text: str) -> str:
    """``text`` with URI credentials and secret query values masked."""
    text = URI_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    return QUERY_SECRET.sub(lambda m: f"{m.group('name')}{MASK}", text)


def redact(value: Any, name: str = "") -> Any:
    """A copy of a config-like value with secrets masked: a mapping's values under secret-looking
    keys, and credentials in every string."""
    if name and is_secret_name(name) and value not in (None, "", [], {}):
        return MASK
    if isinstance(value, dict):
        return {key: redact(inner, str(key)) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(inner) for inner in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


class RedactingFilter(logging.Filter):
    """Masks secrets in every record a handler emits (its message and its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call; the handler reports it, not us
            return True
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True
