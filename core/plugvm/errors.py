"""The root of plugvm's exceptions.

Every error plugvm raises on purpose derives from PlugvmError; subclasses also
inherit the builtin they resemble, so callers may catch either.
"""


class PlugvmError(Exception):
    """Root of all errors raised by plugvm on purpose."""
