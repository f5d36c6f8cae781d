"""Parameter checks shared by the estimators, features, population and phantom generators.

One message format everywhere: ``"<name> must be <rule>, got <value>"``. Estimators declare
their hyper-parameters once, as a mapping from name to a :class:`Int`, :class:`Real` or
:class:`Options` constraint, and call :func:`validate` on themselves (scikit-learn's
``_parameter_constraints`` idea, without its machinery)::

    _constraints = {"n_clusters": Int(2), "tol": Real(0, 1, low_open=True), "device": Options(str)}

    def fit(self, X):
        validate(self, self._constraints)

``check_int`` / ``check_number`` are the same rules for a single value (a notebook param, a
generator argument); they return the value converted to ``int`` / ``float``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Int", "Options", "Real", "check_int", "check_number", "validate"]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(
    name: str,
    value: Any,
    minimum: int | None = 1,
    maximum: int | None = None,
    *,
    allow_none: bool = False,
) -> int | None:
    """``value`` as an ``int`` within ``[minimum, maximum]``, else ``ValueError`` naming ``name``."""
    if value is None and allow_none:
        return None
    bounds = [f">= {minimum}"] * (minimum is not None) + [f"<= {maximum}"] * (maximum is not None)
    rule = " ".join(["an integer", " and ".join(bounds)]).strip() + (
        " or None" if allow_none else ""
    )
    if (
        not _is_int(value)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return int(value)


def check_number(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``value`` as a finite ``float`` in the interval, else ``ValueError`` naming ``name``.

    The interval is closed unless ``low_open`` / ``high_open``; an infinite bound only says
    "no bound" (NaN and infinities are always refused)."""
    if value is None and allow_none:
        return None
    left, right = (
        "(" if low_open or low == -math.inf else "[",
        ")" if high_open or high == math.inf else "]",
    )
    rule = f"a finite number in {left}{low:g}, {high:g}{right}"
    if allow_none:
        rule += " or None"
    ok = _is_real(value) and math.isfinite(value)
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Int:
    """An integer in ``[minimum, maximum]`` (``None`` allowed with ``allow_none``)."""

    minimum: int | None = 1
    maximum: int | None = None
    allow_none: bool = False

    def check(self, name: str, value: Any) -> Any:
        return check_int(name, value, self.minimum, self.maximum, allow_none=self.allow_none)


@dataclass(frozen=True)
class Real:
    """A finite number in ``[low, high]`` (open ends with ``low_open`` / ``high_open``)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    allow_none: bool = False

    def check(self, name: str, value: Any) -> Any:
        return check_number(
            name,
            value,
            self.low,
            self.high,
            low_open=self.low_open,
            high_open=self.high_open,
            allow_none=self.allow_none,
        )


class Options:
    """One of the listed values, or an instance of the listed types."""

    def __init__(self, *allowed: Any) -> None:
        self.allowed = allowed

    def check(self, name: str, value: Any) -> Any:
        for allowed in self.allowed:
            if isinstance(allowed, type):
                if isinstance(value, allowed) and (allowed is bool or not isinstance(value, bool)):
                    return value
            elif type(value) is type(allowed) and value == allowed:
                return value
        names = [a.__name__ if isinstance(a, type) else repr(a) for a in self.allowed]
        raise ValueError(f"{name} must be {' or '.join(names)}, got {value!r}")


def validate(owner: Any, constraints: Mapping[str, Int | Real | Options]) -> None:
    """Check every named attribute of ``owner`` (an estimator) against its constraint."""
    for name, constraint in constraints.items():
        constraint.check(name, getattr(owner, name))
