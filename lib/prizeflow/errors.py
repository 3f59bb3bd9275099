"""The error every job raises for a reason the user can act on, and how any other exception is
told in one line: its root cause, unwrapped from Java when it came through py4j."""

from __future__ import annotations


class JobError(RuntimeError):
    """A job failed for a reason the user can act on; the message says which."""


def first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0] if text else ""


def _java_root(java_exception) -> str | None:
    """``Class: message`` of the innermost cause of a Java throwable, or None."""
    try:
        root, seen = java_exception, 0
        while root.getCause() is not None and seen < 50:  # a cycle of causes is possible
            root, seen = root.getCause(), seen + 1
        name = root.getClass().getName()
        return f"{name}: {first_line(root.getMessage() or '')}".rstrip(": ")
    except Exception:  # noqa: BLE001 - the JVM may be gone; fall back to the Python text
        return None


def one_line(exc: BaseException) -> str:
    """``Type: message`` of ``exc``'s root cause in one line. A Py4JJavaError's own text is only
    "An error occurred while calling o717.count": the Java cause names what failed."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        root = _java_root(java)
        if root:
            return root
    cause, seen = exc, {id(exc)}
    while cause.__cause__ is not None and id(cause.__cause__) not in seen:
        cause = cause.__cause__
        seen.add(id(cause))
    message = first_line(str(exc)) or first_line(str(cause))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
