"""Turn a scale file (e.g. ``paper_scale.yaml``) into ``dvc exp run -S`` arguments.

``paper_scale.yaml`` holds, per study block of ``params.yaml``, the params that differ at the
papers' sizes. ``make paper-scale`` runs ``dvc exp run $(python -m medclust.scale paper_scale.yaml)``
so the paper-scale run is a DVC experiment next to the committed demo-scale results.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml


def set_param_args(scale_file: str | Path, params_file: str | Path = "params.yaml") -> list[str]:
    scale = yaml.safe_load(Path(scale_file).read_text()) or {}
    params = yaml.safe_load(Path(params_file).read_text()) or {}
    args = []
    for block, values in scale.items():
        if block not in params:
            raise KeyError(f"{scale_file}: block {block!r} is not in {params_file}")
        for key, value in values.items():
            if key not in params[block]:
                raise KeyError(f"{scale_file}: {block}.{key} is not a param in {params_file}")
            args += [
                "-S",
                f"{block}.{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}",
            ]
    return args


if __name__ == "__main__":
    print(" ".join(shlex.quote(a) for a in set_param_args(*sys.argv[1:])))
