"""Phantom cohorts with known ground truth, one generator module per study cohort.

Each generator module defines ``NAME`` (the cohort folder name under ``data/``),
``DEFAULTS`` (its parameters, seed included, at the committed demo scale) and
``generate(root, **params) -> Path`` which writes the cohort with
:func:`medclust.cohort.write_cohort`. Generation is seeded and bit-reproducible.

Build the embedded defaults with ``python -m medclust_phantoms --out data`` (what ``make data``
runs); ``--set key=value`` overrides a generator parameter for a one-off cohort.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

# cohort name -> module of medclust_phantoms; each study issue adds its own cohort here
_MODULES = {
    "liver_mri": "liver_mri",
    "head_modalities": "head_modalities",
    "lung_microct": "lung_microct",
    "emphysema_ct": "emphysema_ct",
    "routine_ct": "routine_ct",
    "routine_ct_atlas": "routine_ct_atlas",
}


def available() -> list[str]:
    return sorted(_MODULES)


def generator(name: str):
    if name not in _MODULES:
        raise KeyError(f"unknown phantom cohort {name!r}; known: {', '.join(available())}")
    return import_module(f"{__name__}.{_MODULES[name]}")


def with_overrides(name: str, overrides: dict) -> dict:
    """The parameters of generator ``name``: its defaults updated by ``overrides``; an unknown
    name is a ``TypeError`` naming the generator and the known parameters."""
    defaults = generator(name).DEFAULTS
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise TypeError(
            f"phantom {name!r}: unknown parameter(s) {sorted(unknown)}; known: {sorted(defaults)}"
        )
    return {**defaults, **overrides}


def build(name: str, out_dir: str | Path, **overrides) -> Path:
    """Write cohort ``name`` into ``out_dir/name`` with the generator's defaults and overrides."""
    return generator(name).generate(Path(out_dir) / name, **with_overrides(name, overrides))
