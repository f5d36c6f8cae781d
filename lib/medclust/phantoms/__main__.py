"""``python -m medclust.phantoms [NAME ...] --out data [--set key=value ...]``"""

from __future__ import annotations

import argparse
import logging

import yaml

from medclust.phantoms import available, build


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "names", nargs="*", help=f"cohorts to build (default: all of {available()})"
    )
    parser.add_argument("--out", default="data", help="parent folder of the cohort folders")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a generator parameter (YAML value), e.g. --set n_cases=10",
    )
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.names or available():
        print(build(name, args.out, **overrides))


if __name__ == "__main__":
    main()
