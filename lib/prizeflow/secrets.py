"""Keeping credentials inside the process: one redaction policy for everything prizeflow writes
out (log lines, error lines, ``--set`` errors, the stdout summary, the config artifact, MLflow
params and tags, the driver JVM's stderr as prizeflow passes it on) and for Spark's own
``spark.redaction.regex`` (its UI, event logs and ``EXPLAIN`` output). A secret becomes ``***``.

The policy (parameters are masked before URI credentials, so that an ``@`` in a masked value
cannot pass for the end of a userinfo):

1. **Credentials in a URI**: ``scheme://user:password@host`` -> ``scheme://***@host``. The
   password may hold any character but whitespace and quotes, ``/`` and ``@`` included: when the
   text after ``://`` holds an ``@`` or a ``:`` before its first ``/``, everything up to the
   token's *last* ``@`` is masked (``https://u:ab/cd@host``, ``https://u:p@ss@host``). A URL
   with a port and an ``@`` in its path is over-masked the same way: nothing leaks.
2. **Secret parameters** in a query or a Spark Connect URL: ``?``/``&``/``;`` ``name=value``
   where the name is a secret name (below): ``sig``, ``token``, ``access_token``,
   ``client_secret``, ``api_key``, ``X-Amz-Signature``, ``X-Amz-Credential``, ...
3. **Secret settings** written as ``name=value``, ``name: value``, ``name -> value`` (Spark's
   own listing) or ``"name": "value"``, where the name is a secret name.
4. **Authorization values**: ``Bearer <token>``, ``Basic <credentials>``.
5. **Tokens recognised by their shape**, wherever they stand: Databricks personal access tokens
   (``dapi`` + 32 hex), AWS access key ids (``AKIA``/``ASIA`` + 16), GitHub tokens (``ghp_``...,
   ``github_pat_``...), Slack tokens (``xox?-``), JSON web tokens (``eyJ...``.``...``.``...``).

A **secret name** (a setting, a mapping key, a query parameter) matches :data:`SECRET_NAME_REGEX`,
case-insensitive: it holds ``secret``, ``password``, ``passwd``, ``token``, ``credential``,
``signature``, ``api_key``/``apikey``, ``access.key``/``access_key``, ``account.key``,
``private_key``, ``authorization``, or it ends in ``.key``/``_key``/``-key``, ``pwd`` or ``sig``
(``spark.hadoop.fs.s3a.secret.key``, ``fs.azure.account.key.<account>.dfs.core.windows.net``).

Not covered (say so rather than pretend): a secret with whitespace or quotes inside a URI, and a
secret in free text with no name or shape to tell it by.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"

# Written once, in the syntax Python and Java share, because Spark's spark.redaction.regex uses it.
SECRET_NAME_REGEX = (r"secret|password|passwd|token|credential|signature|api[._-]?key|"
                     r"access[._-]?key|account[._-]key|private[._-]?key|authorization|"
                     r"(^|[._-])(key|pwd|sig)$")
SECRET_NAME = re.compile(SECRET_NAME_REGEX, re.IGNORECASE)
# Spark's default spark.redaction.regex, which prizeflow's pattern extends (never replaces).
SPARK_DEFAULT_REDACTION_REGEX = r"(?i)secret|password|token|access[.]?key"
# For spark.redaction.string.regex: userinfo in URIs inside plan strings (paths, options).
SPARK_STRING_REDACTION_REGEX = r"(?i)\b[a-z][a-z0-9+.-]*://[^/\s@'\"]+@"

# Every secret name holds one of these words (lower case), and every token shape one of these
# prefixes: plain substring tests, far cheaper than the patterns, skip most lines.
_SECRET_NAME_WORDS = ("secret", "passw", "token", "credential", "key", "pwd", "sig",
                      "authorization")
_TOKEN_PREFIXES = ("dapi", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
                   "xox", "eyJ")
_URI_START = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://")
_TOKEN_END = re.compile(r"[\s'\"<>`]")
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;](?P<name>[A-Za-z0-9_.\-]+)=)(?P<value>[^&;#\s'\"]+)")
_SETTING = re.compile(
    r"(?P<lead>(?<![\w.\-])(?P<quote>[\"']?)(?P<name>[A-Za-z_][\w.\-]*)(?P=quote)"
    r"\s*(?:=|:|->)\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s\"',;&}\])]+)")
_AUTHORIZATION_SCHEMES = ("Bearer", "Basic")
_AUTHORIZATION = re.compile(r"\b(?P<lead>(?:Bearer|Basic)\s+)(?P<value>[A-Za-z0-9._~+/=\-]{6,})")
_TOKEN_SHAPES = re.compile(
    r"\bdapi[0-9a-f]{32}(?:-\d+)?\b|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|"
    r"\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bgithub_pat_\w{20,}\b|\bxox[abprs]-[A-Za-z0-9-]{10,}|"
    r"\beyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]{5,}")


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def _mask_userinfo(text: str) -> str:
    out, position = [], 0
    for start in _URI_START.finditer(text):
        if start.start() < position:
            continue
        begin = start.end()
        end_match = _TOKEN_END.search(text, begin)
        end = end_match.start() if end_match else len(text)
        token = text[begin:end]
        at = token.rfind("@")
        if at < 0:
            continue
        first_segment = re.split(r"[/?#]", token, maxsplit=1)[0]
        if "@" not in first_segment and ":" not in first_segment:
            continue  # https://host/users/@me: an @ in the path, no credentials
        out.append(text[position:begin])
        out.append(MASK)
        position = begin + at
    out.append(text[position:])
    return "".join(out)


def _mask_named(pattern: re.Pattern, text: str) -> str:
    def replace(match: re.Match) -> str:
        if not is_secret_name(match.group("name")):
            return match.group(0)
        value = match.group("value")
        if value in _AUTHORIZATION_SCHEMES:  # "Authorization: Bearer ***" is masked already
            return match.group(0)
        quote = value[0] if value[:1] in ("'", '"') and len(value) > 1 else ""
        return f"{match.group('lead')}{quote}{MASK}{quote}"
    return pattern.sub(replace, text)


def redact_text(text: str) -> str:
    """``text`` with every secret the policy (module docstring) recognises masked."""
    if not text:
        return text
    # Most lines hold no secret name at all: one scan for any, before the costlier patterns.
    lowered = text.lower()
    named = any(word in lowered for word in _SECRET_NAME_WORDS)
    # Parameters first: a masked value's '@' can no longer pass for the end of a userinfo.
    if named:
        text = _mask_named(_QUERY_PARAM, text)
    if "://" in text:
        text = _mask_userinfo(text)
    if "Bearer" in text or "Basic" in text:
        text = _AUTHORIZATION.sub(lambda m: f"{m.group('lead')}{MASK}", text)
    if named:
        text = _mask_named(_SETTING, text)
    if any(prefix in text for prefix in _TOKEN_PREFIXES):
        text = _TOKEN_SHAPES.sub(MASK, text)
    return text


def redact(value: Any, name: str = "") -> Any:
    """A copy of a config-like value with secrets masked: a mapping's values under secret names,
    and :func:`redact_text` on every string."""
    if name and is_secret_name(name) and value not in (None, "", [], {}):
        return MASK
    if isinstance(value, dict):
        return {key: redact(inner, str(key)) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(inner) for inner in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


def spark_redaction_settings(conf: dict[str, str]) -> dict[str, str]:
    """``spark.redaction.regex`` and ``spark.redaction.string.regex`` extended with this policy's
    secret names and URI userinfo: Spark's default (or the user's own pattern) is kept and
    prizeflow's alternatives are added, so Spark hides in its UI, event logs and plans what
    prizeflow hides in its own output."""
    names = conf.get("spark.redaction.regex") or SPARK_DEFAULT_REDACTION_REGEX
    strings = conf.get("spark.redaction.string.regex")
    return {"spark.redaction.regex": f"(?:{names})|(?i:{SECRET_NAME_REGEX})",
            "spark.redaction.string.regex": (f"(?:{strings})|(?:{SPARK_STRING_REDACTION_REGEX})"
                                             if strings else SPARK_STRING_REDACTION_REGEX)}


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
