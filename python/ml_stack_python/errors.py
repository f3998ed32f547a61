"""Errors that reach the SQL caller with a message, a hint and a SQLSTATE."""


class MLStackError(Exception):
    """An error for the caller of an ml_stack_python entry point: ``message``, ``hint``, ``sqlstate``.

    The package raises it wherever it can say what was wrong and how to fix it; the entry points turn it into a
    PostgreSQL error with ``raise_in(plpy)``. The default SQLSTATE is 22023 (invalid_parameter_value).
    """

    def __init__(self, message, hint=None, sqlstate="22023", detail=None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.sqlstate = sqlstate
        self.detail = detail

    def raise_in(self, plpy):
        """Raise this error through PL/Python (never returns)."""
        kwargs = {"sqlstate": self.sqlstate}
        if self.hint:
            kwargs["hint"] = self.hint
        if self.detail:
            kwargs["detail"] = self.detail
        plpy.error(self.message, **kwargs)


# SQLSTATEs used by the package (PostgreSQL's names)
INVALID_PARAMETER_VALUE = "22023"
DATA_EXCEPTION = "22000"
FEATURE_NOT_SUPPORTED = "0A000"
UNDEFINED_OBJECT = "42704"
DATA_CORRUPTED = "XX001"
INSUFFICIENT_PRIVILEGE = "42501"
EXTERNAL_ROUTINE_EXCEPTION = "38000"


def call(plpy, function, *args, **kwargs):
    """Run ``function(*args, **kwargs)``; an MLStackError becomes a PostgreSQL error with its hint and SQLSTATE."""
    try:
        return function(*args, **kwargs)
    except MLStackError as e:
        e.raise_in(plpy)
