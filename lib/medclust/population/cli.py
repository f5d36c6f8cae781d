"""``python -m medclust.population``: the feature stage of study 05 (DVC stage
``population_features``). The folders and the parameters come from one block of params.yaml
(``--params``, ``--section``); ``--cohort``, ``--atlas`` and ``--out`` override its folders."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from medclust.population.params import PATH_KEYS, read_section
from medclust.population.runner import extract_cohort


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medclust.population",
        description="Per-volume local features (dense Haralick, 3D SIFT, atlas positions) of "
        "a routine CT cohort after multi-template normalisation (study 05). Folders and "
        "parameters come from the --section block of --params; the folder flags override it.",
    )
    parser.add_argument("--params", default="params.yaml", help="params file (YAML)")
    parser.add_argument("--section", default="population_features", help="block of --params")
    parser.add_argument("--cohort", help="cohort folder (dataset.json); default: block's cohort")
    parser.add_argument("--atlas", help="atlas + templates cohort folder; default: block's atlas")
    parser.add_argument("--out", help="output folder for <case>.npz + index.csv; default: out")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDR", help="address of a running dask scheduler")
    where.add_argument("--serial", action="store_true", help="no dask: a plain loop")
    parser.add_argument("--workers", type=int, default=2, help="local dask workers (default 2)")
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import distributed  # noqa: F401  (configures its loggers on import; quieten them after)

    logging.getLogger("distributed").setLevel(logging.WARNING)
    try:
        paths, params = read_section(args.params, args.section)
        for key in PATH_KEYS:
            flag = getattr(args, key)
            if flag is not None:
                paths[key] = flag
            elif key not in paths:
                raise ValueError(
                    f"{args.params}: block {args.section!r} has no key {key!r} (the {key} "
                    f"folder); add it there or pass --{key}"
                )
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    mode = "serial" if args.serial else (args.scheduler or "local")
    try:
        extract_cohort(
            paths["cohort"],
            paths["atlas"],
            paths["out"],
            params,
            mode=mode,
            n_workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            verbose=not args.no_progress,
        )
    except (OSError, ValueError) as exc:  # CohortError is a ValueError: it names the file
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    return 0
