"""Worked solutions that do the arithmetic one digit column at a time (the `*_columns` files).

A 135M model writes the right *form* of an answer quickly but gets multi-digit sums wrong
("809 + 852 = 1761"): it has to produce every digit of the result in one step, most
significant first, before it has worked out the carries. Written out column by column,
ones first (Nye et al. 2021, "Show Your Work"; Lee et al. 2023, "Teaching Arithmetic to
Small Transformers"), each step is a one-digit fact the model already knows:

    809 + 852: 9+2=11, 0+5+1=6, 8+8=16, so 1661.
    503 - 414: 13-4=9, 10-1-1=8, 5-4-1=0, so 89.
    61 - 93: 93 - 61 first: 3-1=2, 9-6=3, so -32.
    7 * 48: 7*8=56, 7*4+5=33, so 336.

The rule: each column writes its last digit and carries the rest (a borrow is written as
the "1" put in front of the top digit and the "-1" taken from the next column); the last
column is written whole. The line ends with the result, then the usual worked line and
`#### N`. Standard library only; `make_data.py` writes and checks the files.
"""

import re

OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}


def _digits(n, width):
    """Digits of n >= 0, ones first, padded with zeros to ``width``."""
    s = str(n).rjust(width, "0")
    return [int(ch) for ch in reversed(s)]


def _add_columns(x, y):
    width = max(len(str(x)), len(str(y)))
    dx, dy = _digits(x, width), _digits(y, width)
    cols, carry = [], 0
    for a, b in zip(dx, dy, strict=True):
        s = a + b + carry
        cols.append(f"{a}+{b}{'+1' if carry else ''}={s}")
        carry = s // 10
    return cols


def _sub_columns(x, y):
    """x >= y >= 0."""
    width = len(str(x))
    dx, dy = _digits(x, width), _digits(y, width)
    cols, borrow = [], 0
    for a, b in zip(dx, dy, strict=True):
        need = a - borrow < b
        top = a + 10 if need else a
        cols.append(f"{top}-{b}{'-1' if borrow else ''}={top - b - borrow}")
        borrow = 1 if need else 0
    return cols


def _mul_columns(d, n):
    """d a single digit, n >= 0."""
    cols, carry = [], 0
    for b in _digits(n, len(str(n))):
        p = d * b + carry
        cols.append(f"{d}*{b}{f'+{carry}' if carry else ''}={p}")
        carry = p // 10
    return cols


def column_line(x, op, y):
    """One step worked column by column: '<x> <op> <y>: <columns>, so <result>.'"""
    v = OPS[op](x, y)
    head = f"{x} {op} {y}: "
    if op == "+":
        return head + ", ".join(_add_columns(x, y)) + f", so {v}."
    if op == "-":
        if x >= y:
            return head + ", ".join(_sub_columns(x, y)) + f", so {v}."
        return head + f"{y} - {x} first: " + ", ".join(_sub_columns(y, x)) + f", so {v}."
    if op == "*":
        if x >= 10 and y < 10:   # always a single digit times the other number
            x, y = y, x
        if x >= 10:
            raise ValueError(f"column multiplication needs a one-digit factor: {x} * {y}")
        return head + ", ".join(_mul_columns(x, y)) + f", so {v}."
    raise ValueError(f"unknown operator {op!r}")


def column_work(ops, operands):
    """The column lines of a one- or two-step problem: (a op0 b) [op1 c]."""
    lines, cur = [], operands[0]
    for op, y in zip(ops, operands[1:], strict=True):
        lines.append(column_line(cur, op, y))
        cur = OPS[op](cur, y)
    return "\n".join(lines)


# --------------------------------------------------------------------------- checking

_LINE = re.compile(r"^(-?\d+) ([+\-*]) (\d+): (?:(\d+) - (\d+) first: )?(.*), so (-?\d+)\.$")
_COL = re.compile(r"^(\d+)([+\-*])(\d+)(?:([+\-])(\d+))?=(\d+)$")


def check_line(line):
    """Re-derive a column line from its own text; returns (x, op, y, result) or raises."""
    m = _LINE.match(line)
    assert m, line
    x, op, y, sx, sy, cols, result = m.groups()
    x, y, result = int(x), int(y), int(result)
    assert OPS[op](x, y) == result, line
    written = []
    for col in cols.split(", "):
        c = _COL.match(col)
        assert c, (line, col)
        a, cop, b, extra_op, extra, value = c.groups()
        v = OPS[cop](int(a), int(b))
        if extra_op:
            v = OPS[extra_op](v, int(extra))
        assert v == int(value), (line, col)
        written.append(value)
    # the result is the last column whole, then the other columns' last digits, reversed
    digits = written[-1] + "".join(w[-1] for w in reversed(written[:-1]))
    magnitude = int(digits)
    if sx is not None:
        assert (int(sx), int(sy)) == (y, x) and result == -magnitude, line
    else:
        assert result == magnitude, line
    return x, op, y, result
