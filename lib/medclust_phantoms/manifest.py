"""Per-file checksums of the generated cohorts, so a mismatch names the cohort and the files.

``data.dvc`` pins ``data/`` by one hash over the whole folder; when a rebuild differs it can
only say "data/ differs". ``data.md5`` beside it lists the MD5 of every file (the
``md5sum`` format, which DVC's per-file hashes also use: ``md5sum -c data.md5`` checks it by
hand). ``make data`` records or checks it with::

    python -m medclust_phantoms.manifest check data data.md5
    python -m medclust_phantoms.manifest record data data.md5
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import defaultdict
from pathlib import Path

CHUNK = 1 << 20


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def digests(folder: str | Path) -> dict[str, str]:
    """MD5 of every file under ``folder``, keyed by its POSIX path relative to the folder's
    parent (``data/liver_mri/...``), in sorted order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder.parent).as_posix(): file_md5(p) for p in files}


def write(entries: dict[str, str], path: str | Path) -> None:
    text = "".join(f"{md5}  {name}\n" for name, md5 in sorted(entries.items()))
    Path(path).write_text(text)


def read(path: str | Path) -> dict[str, str]:
    entries = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        md5, sep, name = line.partition("  ")
        if not sep or len(md5) != 32:
            raise ValueError(f"{path}:{lineno}: expected '<md5>  <path>', got {line!r}")
        entries[name] = md5
    return entries


def differences(expected: dict[str, str], actual: dict[str, str]) -> dict[str, dict[str, list]]:
    """``{cohort: {"changed": [...], "missing": [...], "extra": [...]}}`` for every cohort
    (first folder below ``data/``) whose files differ from ``expected``."""
    out: dict[str, dict[str, list]] = defaultdict(
        lambda: {"changed": [], "missing": [], "extra": []}
    )

    def cohort(name: str) -> str:
        parts = name.split("/")
        return parts[1] if len(parts) > 2 else parts[0]

    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            out[cohort(name)]["missing"].append(name)
        elif name not in expected:
            out[cohort(name)]["extra"].append(name)
        elif expected[name] != actual[name]:
            out[cohort(name)]["changed"].append(name)
    return dict(out)


def describe(diffs: dict[str, dict[str, list]], limit: int = 5) -> str:
    lines = []
    for cohort, kinds in sorted(diffs.items()):
        counts = ", ".join(f"{len(v)} {k}" for k, v in kinds.items() if v)
        lines.append(f"  {cohort}: {counts}")
        listed = [f"{k}: {name}" for k, names in kinds.items() for name in names]
        lines.extend(f"    {item}" for item in listed[:limit])
        if len(listed) > limit:
            lines.append(f"    ... and {len(listed) - limit} more")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medclust_phantoms.manifest",
        description="Record or check the per-file MD5 manifest of the generated cohorts.",
    )
    parser.add_argument("action", choices=("check", "record"))
    parser.add_argument("folder", help="the data folder, e.g. data")
    parser.add_argument("manifest", help="the manifest file, e.g. data.md5")
    args = parser.parse_args(argv)
    try:
        actual = digests(args.folder)
        if args.action == "record":
            write(actual, args.manifest)
            print(f"recorded {len(actual)} files of {args.folder} in {args.manifest}")
            return 0
        diffs = differences(read(args.manifest), actual)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if diffs:
        print(f"{args.folder} differs from {args.manifest} in {len(diffs)} cohort(s):")
        print(describe(diffs))
        return 1
    print(f"{args.folder} matches {args.manifest} ({len(actual)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
