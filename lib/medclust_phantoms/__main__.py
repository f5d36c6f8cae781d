"""``python -m medclust_phantoms [NAME ...] --out FOLDER [--set key=value ...] [--force]``

Writes each cohort to ``FOLDER/NAME``. An existing cohort folder is never replaced without
``--force`` (``make data`` is the one writer of the tracked ``data/``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from medclust_phantoms import available, build, with_overrides

PROG = "python -m medclust_phantoms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build phantom cohorts with known ground truth (seeded, bit-reproducible).",
        epilog="Example: python -m medclust_phantoms liver_mri --out /tmp/variants "
        "--set difficulty=0.8",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"cohorts to build (default: all of {available()})"
    )
    parser.add_argument("--out", required=True, help="parent folder of the cohort folders")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a generator parameter (YAML value), e.g. --set n_cases=10",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace cohort folders that already exist"
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in available()]
    if unknown:
        parser.error(f"unknown cohort(s) {unknown}; known: {', '.join(available())}")
    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    names = args.names or available()
    for name in names:  # every name checked before anything is written
        try:
            with_overrides(name, overrides)
        except TypeError as exc:
            parser.error(str(exc))
    existing = [str(Path(args.out) / n) for n in names if (Path(args.out) / n).exists()]
    if existing and not args.force:
        parser.exit(
            1,
            f"{PROG}: error: {', '.join(existing)} already exist(s); nothing was written. "
            "Choose another --out, or pass --force to replace them\n",
        )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in names:
        try:
            print(build(name, args.out, **overrides))
        except (TypeError, ValueError) as exc:
            parser.exit(1, f"{PROG}: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
