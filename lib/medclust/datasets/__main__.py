"""``python -m medclust.datasets medmnist NPZ --out DIR [--name NAME] [--force]``
``python -m medclust.datasets listed [--params params.yaml] [--section matrix]``

``medmnist`` converts a public dataset file into a medclust cohort folder ``DIR`` and prints
its path; an existing non-empty ``DIR`` is replaced only with ``--force`` (and only if it is a
cohort). ``listed`` converts every npz of a params block's ``cohorts`` listing into its
``real_dir`` (:mod:`medclust.datasets.listing`; the ``real_cohorts`` DVC stage), recording
the files that are absent.
Bad input is one line ``python -m medclust.datasets: error: ...`` on stderr and exit status 1;
usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from medclust.datasets.listing import convert_listed
from medclust.datasets.medmnist import medmnist_cohort

PROG = "python -m medclust.datasets"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Convert a public medical-image dataset into a medclust cohort."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    medmnist = commands.add_parser(
        "medmnist",
        help="an official MedMNIST v2 / MedMNIST+ npz (any of its 18 sets, 2D or 3D)",
        description="Convert an official MedMNIST npz into a cohort: one NIfTI per image, "
        "clinical.csv with the label and the official split, dataset.json naming source and "
        "licence. Never downloads.",
        epilog="Example: python -m medclust.datasets medmnist breastmnist --out data/breastmnist",
    )
    medmnist.add_argument(
        "npz",
        metavar="NPZ",
        help="path of the npz, or a name (breastmnist, adrenalmnist3d_64) in ~/.medmnist",
    )
    medmnist.add_argument("--out", required=True, metavar="DIR", help="the cohort folder")
    medmnist.add_argument("--name", help="cohort name in dataset.json (default: the file stem)")
    medmnist.add_argument(
        "--force", action="store_true", help="replace DIR if it is an existing cohort folder"
    )
    listed = commands.add_parser(
        "listed",
        help="every MedMNIST npz of a params block's cohorts listing, into its real_dir",
        description="Convert each npz source of the block's `cohorts` into <real_dir>/<name> "
        "and write <real_dir>/sources.json; an npz that is absent is recorded, not an error.",
    )
    listed.add_argument("--params", default="params.yaml", help="params file (YAML)")
    listed.add_argument("--section", default="matrix", help="block with cohorts and real_dir")
    return parser


def _listed(params: str, section: str) -> None:
    import yaml

    try:
        block = yaml.safe_load(open(params, encoding="utf-8"))[section]
        cohorts, real_dir = block["cohorts"], block["real_dir"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{params}: no block {section!r} with cohorts and real_dir ({exc})"
        ) from exc
    for name, state in convert_listed(cohorts, real_dir).items():
        print(f"{name}: {state['status']}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "listed":
            _listed(args.params, args.section)
        else:
            print(medmnist_cohort(args.npz, args.out, name=args.name, force=args.force))
    except (OSError, ValueError) as exc:
        parser.exit(1, f"{PROG}: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
