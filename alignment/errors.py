"""Errors a run can stop with, importable without torch (the CLI prints them as messages)."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many non-finite losses in a row, or a set-up this
    version does not support)."""


def not_utf8(data: bytes, exc: UnicodeDecodeError, *, line: int | None = None) -> str:
    """Where `data` stops being UTF-8: 'not valid UTF-8 text (byte 0x.. at line L, column C)',
    or only the column when the caller already names the `line`."""
    byte = f"byte 0x{data[exc.start]:02x}"
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    if line is not None:
        return f"not valid UTF-8 text ({byte} at column {column})"
    line = data.count(b"\n", 0, exc.start) + 1
    return f"not valid UTF-8 text ({byte} at line {line}, column {column})"
