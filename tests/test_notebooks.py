"""Notebook hygiene and smoke runs.

Every notebook run by a DVC stage: committed without outputs, exactly one ``parameters`` cell
whose names and defaults equal its ``params.yaml`` block, every param passed by the stage's
papermill command; and each runs end to end through papermill on tiny inputs.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest
import yaml
from conftest import ROOT, dvc_stages, run_notebook, write_tiny_cohort

from medclust.datasets.listing import entries

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _notebook_stages() -> dict[str, tuple[str, str]]:
    """notebook stem -> (stage name, params block): the studies medclust.run knows. The
    one-input studies come from dvc.yaml's ``study`` template (``study@<block>``)."""
    from medclust.run import STUDIES

    template = DVC["stages"]["study"]["foreach"]
    return {
        notebook: (f"study@{name}" if name in template else name, name)
        for name, notebook in STUDIES.items()
    }


STAGES = _notebook_stages()


def test_every_notebook_has_a_stage():
    on_disk = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert on_disk == sorted(STAGES)


@pytest.mark.parametrize("notebook", sorted(STAGES))
def test_committed_without_outputs(notebook):
    nb = nbformat.read(ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


@pytest.mark.parametrize("notebook", sorted(STAGES))
def test_parameters_match_params_yaml(notebook):
    path = ROOT / "notebooks" / f"{notebook}.ipynb"
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    inspected = pm.inspect_notebook(str(path))
    defaults = {name: ast.literal_eval(p["default"]) for name, p in inspected.items()}
    _, block = STAGES[notebook]
    assert defaults == PARAMS[block]
    assert notebook.split("_", 1)[1] in " ".join(
        PARAMS[block].get("report_dir", notebook).split("/")
    )


@pytest.mark.parametrize("notebook", sorted(STAGES))
def test_stage_runs_the_notebook_with_its_block(notebook):
    """Each param is declared once (params.yaml); the stage names only its block."""
    stage, block = STAGES[notebook]
    spec = dvc_stages()[stage]
    assert spec["cmd"] == f"python -m medclust.run {block}"
    assert spec["params"] == [block]
    assert {"lib/medclust", f"notebooks/{notebook}.ipynb"} <= set(spec["deps"])
    params = PARAMS[block]
    if "cohorts" in params:  # a listing (the matrix): every cohort folder lies in a dependency
        for entry in entries(params["cohorts"], params["real_dir"]):
            deps = [Path(d) for d in spec["deps"]]
            assert any(d == entry.folder or d in entry.folder.parents for d in deps), entry
    else:
        assert params.get("cohort", params.get("data_dir")) in spec["deps"]
    # DVC must not delete the committed results before a run (a failed run keeps them)
    report_dir = PARAMS[block]["report_dir"]
    assert f"{report_dir}/metrics.json" in spec["outs"]
    for path, persist in spec["outs"].items():
        assert persist is True, path


def test_studies_do_not_depend_on_the_generators():
    """A phantom generator edit changes data.dvc, not the studies' code hash."""
    for name, spec in dvc_stages().items():
        assert not any("medclust_phantoms" in d for d in spec["deps"]), name


def test_metrics_declared_for_every_study():
    declared = set(DVC["metrics"])
    for _, block in STAGES.values():
        assert f"{PARAMS[block]['report_dir']}/metrics.json" in declared


# ------------------------------------------------------------------------------ smoke runs


SMOKE_CDCN = {
    "n_patches": 300,
    "patch_px": 16,
    "pretrain_epochs": 1,
    "epochs": 1,
    "n_seeds": 2,
    "n_trees": 10,
    "window_stride_mm": 14.0,
    "n_clusters": 4,
}

SMOKE_CAE_DEC = {
    "image_px": 64,
    "pretrain_steps": 8,
    "max_epochs": 4.0,
    "n_seeds": 2,
    "sweep_dims": "3,5",
    "slices_per_volume": 4,
}

SMOKE_JULE3D = {
    "patch_size": 11,
    "n_patches": 120,
    "n_final_clusters": 6,
    "epochs_per_period": 1,
    "stride": 6,
    "k_max": 4,
    "n_seeds": 1,
}

SMOKE_DEEPCLUSTER = {
    "input_size": 16,
    "base_filters": 2,
    "epochs": 2,
    "n_seeds": 1,
    "batch_size": 4,
    "crop_fraction": 1.0,  # the encoder needs 16 voxels per side: no room for crops at 16^3
}

SMOKE_MATRIX = {
    "pretrain_steps": 5,
    "batch_size": 8,
    "max_epochs": 1.0,
    "dcn_epochs": 1,
    "jule_clusters": 3,
    "deepcluster_epochs": 1,
    "n_seeds": 2,
}

SMOKE_POPULATION = {
    "n_words_haralick": 8,
    "n_words_micro_sift": 4,
    "n_words_macro_sift": 4,
    "max_per_volume": 100,
    "n_topics": 4,
    "k_min": 2,
    "k_max": 4,
    "k_step": 1,
    "n_seeds": 2,
    "min_term_count": 1,
    "n_permutations": 5,
}


def population_smoke_cohort(tmp_path):
    """A small routine CT cohort, its atlas (two templates) and its extracted features."""
    from medclust.population import DEFAULTS, extract_cohort
    from medclust_phantoms import build

    small = {"shape": (32, 32, 28), "spacing": (11.25, 11.25, 11.4)}
    cohort = build("routine_ct", tmp_path / "data", n_cases=16, **small)
    atlas = build("routine_ct_atlas", tmp_path / "data", n_templates=2, **small)
    features = tmp_path / "features"
    # coarser voxels than the default cohort's: a larger first SIFT scale
    params = {**DEFAULTS, "n_templates": 2, "sift_sigma0_mm": 6.0}
    extract_cohort(cohort, atlas, features, params, mode="serial")
    return cohort, features


def smoke_params(notebook, tmp_path):
    """Tiny params for each notebook: tiny cohorts, a temp report folder."""
    report_dir = str(tmp_path / "report")
    if notebook == "00_cohorts":
        write_tiny_cohort(tmp_path / "data" / "tiny")
        return {"data_dir": str(tmp_path / "data"), "report_dir": report_dir, "n_examples": 2}
    if notebook == "01_cdcn_texture_signatures":
        from medclust_phantoms import build

        cohort = build("liver_mri", tmp_path / "data", n_cases=8, shape=(80, 64, 6))
        return {
            "cohort": str(cohort),
            "report_dir": report_dir,
            "checkpoint_dir": str(tmp_path / "ckpt"),
            **SMOKE_CDCN,
        }
    if notebook == "02_jule3d_segmentation":
        from medclust_phantoms import build

        cohort = build("lung_microct", tmp_path / "data", n_specimens=2, size=40)
        return {"cohort": str(cohort), "report_dir": report_dir, **SMOKE_JULE3D}
    if notebook == "03_deepcluster_dcam":
        from medclust_phantoms import build

        cohort = build("emphysema_ct", tmp_path / "data", n_train=18, n_test=12, shape=(32, 32, 32))
        return {"cohort": str(cohort), "report_dir": report_dir, **SMOKE_DEEPCLUSTER}
    if notebook == "04_cae_dec_dcec":
        from medclust_phantoms import build

        cohort = build("head_modalities", tmp_path / "data", counts=(10, 10, 10), size=64)
        return {"cohort": str(cohort), "report_dir": report_dir, **SMOKE_CAE_DEC}
    if notebook == "05_population_clustering":
        cohort, features = population_smoke_cohort(tmp_path)
        return {
            "cohort": str(cohort),
            "features_dir": str(features),
            "report_dir": report_dir,
            **SMOKE_POPULATION,
        }
    if notebook == "06_method_matrix":
        cohort = write_tiny_cohort(tmp_path / "data" / "tiny", n=24, shape=(16, 16, 8))
        return {
            "cohorts": {"tiny": str(cohort), "gone": str(tmp_path / "gone.npz")},
            "real_dir": str(tmp_path / "real"),
            "report_dir": report_dir,
            **SMOKE_MATRIX,
        }
    raise KeyError(f"no smoke params for {notebook}: add them here")


@pytest.mark.slow
@pytest.mark.parametrize("notebook", sorted(STAGES))
def test_notebook_runs_in_smoke_mode(notebook, tmp_path):
    params = smoke_params(notebook, tmp_path)
    run_notebook(notebook, params, tmp_path)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert json.loads((tmp_path / "report" / "tables" / "metrics_all.json").read_text())
    assert metrics
    assert list((tmp_path / "report" / "figures").glob("*.png"))
    if notebook != "00_cohorts":
        assert (tmp_path / "report" / "tables" / "paper_comparison.csv").is_file()
    if notebook == "05_population_clustering":
        # the LDA descriptors f^L are distributions over topics
        topics = pd.read_csv(tmp_path / "report" / "tables" / "topic_mixtures.csv")
        values = topics.drop(columns="case_id").to_numpy()
        assert values.shape == (16, params["n_topics"])
        assert (values >= 0).all() and abs(values.sum(axis=1) - 1).max() < 1e-9


#: What a rerun may change: wall-clock times (the matrix records seconds per cell).
TIMINGS = ("runtime_s", "seconds_per_seed")


def _metrics_without_runtime(path):
    metrics = json.loads(path.read_text())
    for key in TIMINGS:
        metrics.pop(key, None)
    return metrics


def _table_without_timings(path, run_folder):
    """The table's CSV without timing columns, the run's own folder written as ``<run>``."""
    table = pd.read_csv(path)
    if path.stem in TIMINGS:
        return None
    text = table.drop(columns=[c for c in table.columns if c in TIMINGS]).to_csv(index=False)
    return text.replace(str(run_folder), "<run>")


@pytest.mark.slow
@pytest.mark.parametrize("notebook", [nb for nb in sorted(STAGES) if nb != "00_cohorts"])
def test_same_params_same_numbers(notebook, tmp_path):
    """Two runs from scratch (separate checkpoint folders) give identical metrics and tables."""
    runs = []
    for name in ("a", "b"):
        params = smoke_params(notebook, tmp_path / name)
        run_notebook(notebook, params, tmp_path / name)
        report = tmp_path / name / "report"
        tables = {
            p.name: _table_without_timings(p, tmp_path / name)
            for p in sorted((report / "tables").glob("*.csv"))
        }
        runs.append((_metrics_without_runtime(report / "tables" / "metrics_all.json"), tables))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1]
