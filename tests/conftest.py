"""Shared fixtures: tiny cohorts written in a temp dir, paths of the repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medclust.cohort import CaseData, write_cohort

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def tiny_cases(n: int = 3, shape=(12, 10, 4), spacing=(1.5, 1.5, 5.0), seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = rng.integers(0, 1000, size=shape).astype(np.int16)
        mask = np.zeros(shape, np.uint8)
        mask[3:9, 3:8, 1:3] = 1
        labelmap = mask * rng.integers(1, 3, size=shape).astype(np.uint8)
        yield CaseData(
            id=f"case_{i:02d}",
            image=image,
            spacing=spacing,
            mask=mask,
            labelmap=labelmap,
            report=f"Report of case {i}.",
        )


def write_tiny_cohort(root: Path, n: int = 3, **kwargs) -> Path:
    clinical = pd.DataFrame(
        {"case_id": [f"case_{i:02d}" for i in range(n)], "grade": [i % 2 for i in range(n)]}
    )
    return write_cohort(
        root,
        tiny_cases(n, **kwargs),
        clinical,
        name=root.name,
        modality="test",
        description="tiny test cohort",
        labels={0: "outside", 1: "a", 2: "b"},
        clinical_label="grade",
    )


def run_notebook(notebook: str, parameters: dict, out_dir: Path) -> None:
    """Execute ``notebooks/<notebook>.ipynb`` with papermill as the DVC stages do."""
    import papermill as pm

    pm.execute_notebook(
        str(ROOT / "notebooks" / f"{notebook}.ipynb"),
        str(out_dir / "out.ipynb"),
        parameters=parameters,
        kernel_name="python3",
        progress_bar=False,
        cwd=str(ROOT),
    )


@pytest.fixture
def tiny_cohort(tmp_path) -> Path:
    return write_tiny_cohort(tmp_path / "tiny")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not present at {SHARED_DATA} (tests on real data are skipped)")
    return SHARED_DATA


def dvc_stages() -> dict[str, dict]:
    """Every stage of dvc.yaml as DVC resolves it (``foreach`` templates expanded, ``${...}``
    filled from params.yaml): name -> cmd, deps, params (block names) and outs (path -> persist)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    stages = {}
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            if not getattr(stage, "cmd", None):
                continue  # data.dvc
            params = [p for d in stage.deps if isinstance(d, ParamsDependency) for p in d.params]
            stages[stage.addressing] = {
                "cmd": stage.cmd,
                "deps": [d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)],
                "params": params,
                "outs": {o.def_path: o.persist for o in stage.outs},
            }
    return stages
