"""The report's SQL is written once, in DuckDB's dialect; other engines run a translation.

SQLGlot parses each query of :mod:`kzprobe.report.sql` and writes it for Spark at run time,
so the tables cannot drift apart between engines. What SQLGlot does not translate by itself
is fixed here on the parsed tree, in one place: ``arg_max_null`` (DuckDB's ``arg_max`` that
keeps a NULL value) is Spark's ``max_by``, which keeps NULL values too; and ``$N``
parameters become literals (Spark SQL has no positional parameters).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlglot
from sqlglot import exp

from kzprobe.report.model import TIME_FORMAT


def _literal(value: Any) -> exp.Expr:
    """A Python parameter as an SQL literal (the types the report's queries take)."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, datetime):
        return exp.Literal.string(value.strftime(TIME_FORMAT))
    if isinstance(value, int | float):
        return exp.Literal.number(value)
    return exp.Literal.string(str(value))


def _fix(node: exp.Expr, params: Sequence[Any]) -> exp.Expr:
    if isinstance(node, exp.Anonymous) and node.name.lower() == "arg_max_null":
        return exp.Anonymous(this="MAX_BY", expressions=node.expressions)
    if isinstance(node, exp.Placeholder) and node.name.isdigit():
        return _literal(params[int(node.name) - 1])
    return node


@functools.lru_cache(maxsize=64)
def _parsed(text: str) -> exp.Expr:
    return sqlglot.parse_one(text, read="duckdb")


def to_spark(text: str, params: Sequence[Any] = ()) -> str:
    """One DuckDB query (a SELECT) as Spark SQL, its ``$N`` parameters bound to ``params``."""
    tree = _parsed(text).copy().transform(lambda node: _fix(node, params))
    return tree.sql(dialect="spark")
