"""Checks of phantom generator parameters; every error names the generator and the parameter
(``"<generator>: <param> must be ..., got <value>"``, the rules of :mod:`medclust.validation`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medclust.validation import check_int, check_number


def fail(generator: str, param: str, msg: str, value) -> ValueError:
    return ValueError(f"{generator}: {param} {msg}, got {value!r}")


def merged(generator: str, defaults: dict, params: dict) -> dict:
    """``defaults`` updated by ``params``; a name not in ``defaults`` is a ``TypeError``."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise TypeError(f"{generator}: unknown parameter(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **params}


def _is_number(value, kind: type = float) -> bool:
    allowed = (int, np.integer) if kind is int else (int, float, np.number)
    return not isinstance(value, bool) and isinstance(value, allowed) and math.isfinite(value)


def integer(generator: str, params: dict, key: str, minimum: int) -> int:
    """``params[key]`` as an integer >= ``minimum`` (:func:`medclust.validation.check_int`)."""
    return check_int(f"{generator}: {key}", params[key], minimum)


def number(generator: str, params: dict, key: str, lo: float, hi: float) -> float:
    """``params[key]`` as a finite number in ``[lo, hi]``
    (:func:`medclust.validation.check_number`)."""
    return check_number(f"{generator}: {key}", params[key], lo, hi)


def numbers(
    generator: str, params: dict, key: str, n: int, kind: type = float, minimum: float = -math.inf
) -> tuple:
    """A sequence of exactly ``n`` finite numbers (integers if ``kind is int``) >= ``minimum``."""
    value = params[key]
    what = "integers" if kind is int else "numbers"
    bound = f" >= {minimum}" if minimum > -math.inf else ""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise fail(generator, key, f"must be a sequence of {n} {what}{bound}", value)
    items = list(value)
    if len(items) != n or not all(_is_number(v, kind) and v >= minimum for v in items):
        raise fail(generator, key, f"must be {n} {what}{bound}", value)
    return tuple(kind(v) for v in items)


def recorded(params: dict) -> dict:
    """The validated params as ``dataset.json`` records them (``generator_params``): tuples as
    lists, so the JSON reads back equal."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
