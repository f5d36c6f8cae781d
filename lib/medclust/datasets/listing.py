"""A listing of cohorts (``{name: source}``, the method matrix's ``cohorts`` param) and the
folder of converted cohorts it needs.

A source is a MedMNIST npz (``*.npz``: converted by :func:`convert_listed` into
``<real_dir>/<name>``) or a cohort folder (used where it is). An npz that is not on this
machine -- the shared data are optional -- is recorded as absent in
``<real_dir>/sources.json`` instead of failing, so that a pipeline runs wherever it is cloned
and says which real cohorts it could not use.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from medclust.datasets.medmnist import medmnist_cohort
from medclust.outputs import atomic_write_text

log = logging.getLogger(__name__)

#: What :func:`convert_listed` writes beside the converted cohorts.
SOURCES_JSON = "sources.json"


@dataclass(frozen=True)
class Entry:
    """One listed cohort: its ``name``, the ``source`` as listed, and the ``folder`` a study
    reads (``<real_dir>/<name>`` for an npz, the source itself for a folder)."""

    name: str
    source: str
    folder: Path

    @property
    def converted(self) -> bool:
        """Whether the source is an npz that :func:`convert_listed` converts."""
        return self.source.endswith(".npz")


def entries(cohorts: Mapping[str, str], real_dir: str | Path) -> list[Entry]:
    """The listed cohorts in order; ``ValueError`` naming the entry for a bad name or source."""
    if not isinstance(cohorts, Mapping) or not cohorts:
        raise ValueError(f"param cohorts must map names to sources, got {cohorts!r}")
    out = []
    for name, source in cohorts.items():
        if not isinstance(source, str) or not source or not str(name).isidentifier():
            raise ValueError(
                f"param cohorts: entry {name!r}: need a name (letters, digits, _) and a source "
                f"path (a MedMNIST .npz or a cohort folder), got {source!r}"
            )
        folder = Path(real_dir) / name if source.endswith(".npz") else Path(source)
        out.append(Entry(str(name), source, folder))
    return out


def convert_listed(cohorts: Mapping[str, str], real_dir: str | Path) -> dict[str, dict]:
    """Convert every npz source of ``cohorts`` into ``<real_dir>/<name>``
    (:func:`~medclust.datasets.medmnist.medmnist_cohort`, replacing an earlier conversion),
    record an absent file as absent, and write ``<real_dir>/sources.json``:
    ``{name: {"source", "status": "converted" | "absent", "detail"}}`` (folder sources are
    not listed there: nothing is converted for them)."""
    real_dir = Path(real_dir)
    real_dir.mkdir(parents=True, exist_ok=True)
    status = {}
    for entry in entries(cohorts, real_dir):
        if not entry.converted:
            continue
        if not Path(entry.source).is_file():
            detail = f"{entry.source} is not on this machine"
            log.warning("%s: absent (%s)", entry.name, detail)
            status[entry.name] = {"source": entry.source, "status": "absent", "detail": detail}
            continue
        medmnist_cohort(entry.source, entry.folder, name=entry.name, force=True)
        detail = json.loads((entry.folder / "dataset.json").read_text(encoding="utf-8"))["source"]
        status[entry.name] = {"source": entry.source, "status": "converted", "detail": detail}
    atomic_write_text(real_dir / SOURCES_JSON, json.dumps(status, indent=2) + "\n")
    return status


def read_sources(real_dir: str | Path) -> dict[str, dict]:
    """``<real_dir>/sources.json`` (empty when nothing was converted there)."""
    path = Path(real_dir) / SOURCES_JSON
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
