"""Which folder a study run may replace: only a report folder the runner wrote itself.

A run replaces its report folder as a whole (:mod:`medclust.run`), so that a failed run never
mixes with the previous report. So that a mistyped ``--report-dir`` cannot delete anything
else, every folder the runner writes carries a marker file, ``.medclust-report``, holding the
study's name, and an existing path is replaced only when it is

* a folder whose marker names the same study (a report of that study), or
* an empty folder.

Anything else (a file, a symbolic link, a folder without the marker, another study's report) is
refused unless the user passes ``--force``. Some places are refused even then, because
replacing them would lose work that no rerun gives back: the file-system root, the home folder,
the repository, its ``data/``, ``reports/``, ``lib/``, ``notebooks/``, ``tests/`` and ``.git/``,
the current working directory, any folder that holds one of these, and the run's own inputs
(its cohort, or any folder that holds or lies inside one).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

MARKER = ".medclust-report"

#: The repository's own folders that a report never replaces, even with ``--force``.
_REPOSITORY_FOLDERS = ("data", "reports", "lib", "notebooks", "tests", ".git")


class ReportDirError(ValueError):
    """A report folder the runner must not replace; the message names the path."""


def write_marker(folder: Path, study: str) -> None:
    """Mark ``folder`` as a report of ``study`` written by the runner."""
    (Path(folder) / MARKER).write_text(f"{study}\n", encoding="utf-8")


def marked_study(folder: Path) -> str | None:
    """The study named by ``folder``'s marker, or ``None`` when it has none."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return None
    return marker.read_text(encoding="utf-8").strip()


def _holds(outer: Path, inner: Path) -> bool:
    """``outer`` is ``inner`` or one of its parents (both absolute, resolved)."""
    return outer == inner or outer in inner.parents


def _never_replaced(path: Path, repo: Path, inputs: Iterable[Path]) -> str | None:
    """Why ``path`` is refused even with ``--force``, or ``None``."""
    places = {
        "the home folder": Path.home(),
        "the repository": repo,
        "the working directory": Path.cwd(),
        **{f"the repository's {name}/": repo / name for name in _REPOSITORY_FOLDERS},
    }
    for what, place in places.items():
        place = place.resolve()
        if _holds(path, place):
            return f"it is or holds {what} ({place})"
    if _holds(repo / "data", path):
        return "it lies inside the repository's data/ (the cohorts)"
    for given in inputs:
        given = Path(given).resolve()
        if _holds(path, given) or _holds(given, path):
            return f"it is, holds or lies inside an input of this run ({given})"
    return None


def check_replaceable(
    path: str | os.PathLike,
    study: str,
    *,
    repo: Path,
    force: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> None:
    """Raise :class:`ReportDirError` unless the runner may replace ``path`` with a report of
    ``study`` (see the module). ``path`` need not exist."""
    given = Path(path)
    resolved = given.resolve()
    never = _never_replaced(resolved, repo.resolve(), [Path(p) for p in inputs])
    if never:
        raise ReportDirError(
            f"{given}: refusing to replace it with a report, even with --force: {never}"
        )
    if given.is_symlink():
        raise ReportDirError(
            f"{given}: is a symbolic link; refusing to replace it, even with --force "
            "(give a real folder as --report-dir)"
        )
    if not given.exists() or force:
        return
    if not given.is_dir():
        raise ReportDirError(
            f"{given}: is a file, not a report folder; refusing to replace it "
            "(choose another --report-dir, or pass --force to replace it)"
        )
    owner = marked_study(given)
    if owner == study or (owner is None and not any(given.iterdir())):
        return
    what = f"the report of study {owner!r}" if owner else f"a folder without {MARKER}"
    raise ReportDirError(
        f"{given}: holds {what}, not one this runner wrote for {study!r}; refusing to replace "
        "it (choose another --report-dir, or pass --force to replace it)"
    )
