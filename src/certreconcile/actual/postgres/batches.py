"""The rows of a batched write as the source of one statement: ``VALUES`` for a few rows, arrays for many."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

__all__ = ["VALUES_UP_TO", "rows_source"]

#: Up to this many rows a batch goes as ``VALUES``, each value its own parameter: psycopg dumps those in C,
#: while every array parameter costs a pass of its list dumper in Python (about 8 µs, whatever its length;
#: an order's journal, audit and distribution batches hold 1 to 4 rows). More rows go as one array per
#: column, whose cost per row is lower (and a statement takes at most 65,535 parameters).
VALUES_UP_TO = 16


def rows_source(
    alias: str, columns: tuple[tuple[str, str], ...], rows: Sequence[Sequence[object]]
) -> tuple[str, list[object]]:
    """``rows`` as a ``FROM`` item named ``alias(<column names>, n)`` and its parameters.

    ``columns``: (name, SQL type) of each value of a row, in order; ``n`` is the row's position (from 1),
    for ``ORDER BY n``. The SQL holds no value, only placeholders: it is the same for every batch of a size.
    """
    if len(rows) <= VALUES_UP_TO:
        return _values(alias, columns, len(rows)), [value for row in rows for value in row]
    return _arrays(alias, columns), [list(column) for column in zip(*rows, strict=True)]


@cache
def _values(alias: str, columns: tuple[tuple[str, str], ...], count: int) -> str:
    row = ", ".join(f"%s::{sql_type}" for _, sql_type in columns)
    values = ", ".join(f"({row}, {n})" for n in range(1, count + 1))
    return f"(VALUES {values}) AS {alias}({', '.join(name for name, _ in columns)}, n)"


@cache
def _arrays(alias: str, columns: tuple[tuple[str, str], ...]) -> str:
    arrays = ", ".join(f"%b::{sql_type}[]" for _, sql_type in columns)
    return f"unnest({arrays}) WITH ORDINALITY AS {alias}({', '.join(name for name, _ in columns)}, n)"
