"""Per-volume feature pipeline of study 05 (medclust.population): one volume, a cohort in serial,
LocalCluster and scheduler-address modes (identical files), the command line, failures and
params."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medclust import population
from medclust.cohort import CaseData, load_cohort, write_cohort
from medclust.features.bovw import FEATURE_KINDS, Vocabulary, local_features
from medclust.features.glcm import HARALICK_FEATURES
from medclust_phantoms import routine_ct, routine_ct_atlas

ROOT = Path(__file__).resolve().parents[1]
N_CASES = 3
#: Small but real: one template, non-linear registration, 60 keypoints per volume.
PARAMS = {"n_templates": 1, "max_keypoints": 60}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("population")
    cohort = routine_ct.generate(root / "routine_ct", n_cases=N_CASES, seed=0)
    atlas = routine_ct_atlas.generate(root / "routine_ct_atlas", n_templates=1, seed=0)
    return root, cohort, atlas


@pytest.fixture(scope="module")
def template_set(data):
    return population.build_template_set(data[2], PARAMS)


@pytest.fixture(scope="module")
def serial_run(data, template_set):
    root, cohort, atlas = data
    out = root / "serial"
    index = population.extract_cohort(
        cohort, atlas, out, PARAMS, mode="serial", verbose=False, template_set=template_set
    )
    return out, index


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
    ) as cluster:
        yield cluster.scheduler_address


def _same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert filecmp.cmp(a / name, b / name, shallow=False), name


# --------------------------------------------------------------------------- one volume


def test_extract_volume_gives_lung_features_with_atlas_positions(data, template_set):
    from medclust import registration

    cohort = load_cohort(data[1])
    volume = cohort.load(cohort.case_ids[0])
    rec = population.extract_volume(volume, template_set, PARAMS)
    n, m = len(rec["haralick"]), len(rec["sift"])
    assert rec["case_id"] == volume.case_id
    assert rec["haralick"].shape == (n, len(HARALICK_FEATURES)) and n > 100
    assert rec["haralick_pos"].shape == rec["haralick_vox"].shape == (n, 3)
    assert rec["sift"].shape == (m, 160) and 0 < m <= PARAMS["max_keypoints"]
    assert rec["sift_pos"].shape == rec["sift_vox"].shape == (m, 3)
    assert rec["sift_diameter_mm"].shape == (m,)
    assert np.all(np.isfinite(rec["haralick"]))
    # Eq. (1): the chosen template is the one of maximal NCC
    assert rec["ncc"] == max(rec["ncc_all"]) == rec["ncc_all"][rec["template_index"]]
    # the atlas lung mask lands on the true lungs of the phantom
    assert rec["lung_dice"] > 0.8
    # Haralick windows are centred in the (atlas) lung mask, positions are those of the map
    norm = template_set.normalize(registration.Image3D.from_volume(volume))
    lung = registration.lung_mask(norm)
    assert rec["lung_voxels"] == lung.sum()
    assert lung[tuple(rec["haralick_vox"].T)].all()
    np.testing.assert_allclose(rec["haralick_pos"], norm.to_atlas_mm(rec["haralick_vox"]))
    # the chosen sift_sigma0_mm gives both vocabularies words at 7.5 mm voxels
    assert 0 < np.sum(rec["sift_diameter_mm"] <= 20.0) < m
    # keypoints lie within the margin of the lung mask
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(~lung, sampling=volume.spacing)
    vox = np.clip(np.rint(rec["sift_vox"]).astype(int), 0, np.array(lung.shape) - 1)
    assert np.all(dist[tuple(vox.T)] <= population.DEFAULTS["sift_mask_margin_mm"])


def test_hu_levels_hand_computed():
    image = np.array([-2000.0, -1000.0, -975.1, -975.0, 0.0, 399.9, 400.0, 900.0])[:, None, None]
    mask = np.ones(image.shape, bool)
    mask[4] = False
    levels = population.hu_levels(image, mask, -1000.0, 400.0, 56)  # 25 HU bins
    np.testing.assert_array_equal(levels.ravel(), [1, 1, 1, 2, 0, 56, 56, 56])


def test_npz_bytes_are_deterministic_and_loadable(tmp_path):
    arrays = {"a": np.arange(6.0).reshape(2, 3), "case_id": "c1", "n": 3}
    blob = population.npz_bytes(arrays)
    assert blob == population.npz_bytes(arrays)
    (tmp_path / "x.npz").write_bytes(blob)
    with np.load(tmp_path / "x.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["a"], arrays["a"])
        assert z["case_id"].item() == "c1" and z["n"].item() == 3


# --------------------------------------------------------------------------- cohort


def test_serial_run_writes_one_npz_per_case_and_an_index(data, serial_run):
    out, index = serial_run
    case_ids = load_cohort(data[1]).case_ids
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{c}.npz" for c in case_ids] + ["index.csv"]
    )
    on_disk = pd.read_csv(out / "index.csv", dtype={"case_id": str})
    assert list(on_disk.columns) == list(population.INDEX_COLUMNS)
    assert on_disk["case_id"].tolist() == case_ids
    pd.testing.assert_frame_equal(on_disk, index, check_dtype=False)
    records = population.load_features(out)
    for rec, row in zip(records, on_disk.itertuples(), strict=True):
        assert rec["case_id"] == row.case_id
        assert len(rec["haralick"]) == row.n_haralick and len(rec["sift"]) == row.n_sift
        assert np.sum(rec["sift_diameter_mm"] <= 20.0) == row.n_micro_sift


def test_scheduler_address_mode_is_identical_to_serial(data, template_set, serial_run, scheduler):
    root, cohort, atlas = data
    out = root / "address"
    population.extract_cohort(
        cohort, atlas, out, PARAMS, mode=scheduler, verbose=False, template_set=template_set
    )
    _same_files(serial_run[0], out)


def test_cli_on_a_local_cluster_of_two_workers_is_identical_to_serial(data, serial_run, tmp_path):
    """The command line (in process) with its default LocalCluster (2 workers, one thread each),
    its folders read from the params block (as the DVC stage runs it), builds its own template
    set and writes byte-identical files."""
    _, cohort, atlas = data
    params = tmp_path / "params.yaml"
    out = tmp_path / "features"
    params.write_text(
        f"population_features:\n  cohort: {cohort}\n  atlas: {atlas}\n  out: {out}\n"
        "  n_templates: 1\n  max_keypoints: 60\n"
    )
    argv = ["--params", str(params), "--section", "population_features", "--workers", "2"]
    assert population.main([*argv, "--no-progress"]) == 0
    case_ids = load_cohort(cohort).case_ids
    expected = sorted([f"{c}.npz" for c in case_ids] + [population.INDEX_CSV])
    assert sorted(p.name for p in out.iterdir()) == expected
    _same_files(serial_run[0], out)


def test_cli_rejects_bad_params_naming_them(data, tmp_path):
    """``python -m medclust.population`` stops before any work with an error naming the param."""
    _, cohort, atlas = data
    params = tmp_path / "params.yaml"
    params.write_text("population_features:\n  haralick_levels: 1\n")
    cmd = [sys.executable, "-m", "medclust.population", "--cohort", str(cohort), "--atlas"]
    cmd += [str(atlas), "--out", str(tmp_path / "o"), "--params", str(params), "--serial"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert "haralick_levels" in done.stderr
    assert not (tmp_path / "o").exists()


def test_vocabularies_on_extracted_features(serial_run):
    records = population.load_features(serial_run[0])
    for kind in FEATURE_KINDS:
        feats = local_features(records, kind, position_weight=1.0)
        hist = Vocabulary(n_words=4, seed=0, position_columns=3).fit(feats).transform(feats)
        np.testing.assert_array_equal(hist.sum(axis=1), [len(f) for f in feats])
        assert hist.sum() > 0


# --------------------------------------------------------------------------- failures


@pytest.fixture(scope="module")
def broken_cohort(data):
    """Two phantom cases and one single-slice series ('scout_01') that cannot be normalised."""
    root, cohort_root, _ = data
    cohort = load_cohort(cohort_root)
    cases = []
    for case_id in cohort.case_ids[:2]:
        v = cohort.load(case_id)
        cases.append(CaseData(case_id, v.image.astype(np.int16), v.spacing))
    v = cohort.load(cohort.case_ids[2])
    cases.insert(1, CaseData("scout_01", v.image[:, :, 20:21].astype(np.int16), v.spacing))
    clinical = pd.DataFrame({"case_id": [c.id for c in cases]})
    return write_cohort(
        root / "broken", cases, clinical, name="broken", modality="CT", description="test"
    )


@pytest.mark.parametrize("where", ["serial", "scheduler"])
def test_failing_case_raises_naming_the_case(
    broken_cohort, data, template_set, scheduler, where, tmp_path
):
    mode = "serial" if where == "serial" else scheduler
    with pytest.raises(population.CaseExtractionError, match="case 'scout_01'"):
        population.extract_cohort(
            broken_cohort,
            data[2],
            tmp_path / "out",
            PARAMS,
            mode=mode,
            verbose=False,
            template_set=template_set,
        )
    assert not (tmp_path / "out" / "index.csv").exists()
    assert not (tmp_path / "out" / "scout_01.npz").exists()
    assert not list((tmp_path / "out").glob("*.tmp"))


# --------------------------------------------------------------------------- params


def test_defaults_validate_and_match_the_documented_names():
    p = population.validate_params({})
    assert p == {**population.DEFAULTS, "lung_labels": (2, 3)}
    assert population.validate_params({"lung_labels": [2]})["lung_labels"] == (2,)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"haralick_window_mm": 0}, "haralick_window_mm"),
        ({"haralick_step_mm": "15"}, "haralick_step_mm"),
        ({"haralick_levels": 1}, "haralick_levels"),
        ({"haralick_levels": 32.0}, "haralick_levels"),
        ({"hu_min": float("nan")}, "hu_min"),
        ({"hu_max": -1000.0}, "hu_max"),
        ({"sift_sigma0_mm": -4.0}, "sift_sigma0_mm"),
        ({"sift_contrast_threshold": -0.1}, "sift_contrast_threshold"),
        ({"sift_mask_margin_mm": True}, "sift_mask_margin_mm"),
        ({"max_keypoints": 0}, "max_keypoints"),
        ({"n_templates": -1}, "n_templates"),
        ({"nonlinear": "yes"}, "nonlinear"),
        ({"registration_seed": -1}, "registration_seed"),
        ({"lung_labels": []}, "lung_labels"),
        ({"lung_labels": "2,3"}, "lung_labels"),
        ({"max_keypoint": 10}, "max_keypoint"),
    ],
)
def test_bad_params_raise_naming_the_param(params, name):
    with pytest.raises(ValueError, match=name):
        population.validate_params(params)


def test_read_params_names_the_file_and_the_block(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("other:\n  a: 1\npopulation_features:\n  max_keypoints: 10\n")
    assert population.read_params(path, "population_features")["max_keypoints"] == 10
    with pytest.raises(ValueError, match="no block 'features'"):
        population.read_params(path, "features")
    with pytest.raises(ValueError, match="params file is missing"):
        population.read_params(tmp_path / "nope.yaml", "population_features")
    path.write_text("population_features:\n  max_keypoints: 0\n")
    with pytest.raises(ValueError, match=r"params.yaml: population_features: .*max_keypoints"):
        population.read_params(path, "population_features")


def test_read_section_splits_folders_from_params(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("population_features:\n  cohort: c\n  out: o\n  n_templates: 2\n")
    paths, params = population.read_section(path, "population_features")
    assert paths == {"cohort": "c", "out": "o"}
    assert params == population.validate_params({"n_templates": 2})
    path.write_text("population_features:\n  cohort: 3\n")
    with pytest.raises(ValueError, match=r"params.yaml: population_features.cohort must be a"):
        population.read_section(path, "population_features")


def test_cli_names_the_missing_folder_key(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text("population_features:\n  cohort: c\n  atlas: a\n")
    with pytest.raises(SystemExit) as stop:
        population.main(["--params", str(path), "--serial", "--no-progress"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "params.yaml: block 'population_features' has no key 'out'" in err and "--out" in err


def test_repository_stage_reads_its_folders_from_params_yaml():
    """The population_features stage names no folder itself: params.yaml's block does, and the
    population study reads the cohort and the features that block names."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["population_features"]
    block = params["population_features"]
    paths, _ = population.read_section(ROOT / "params.yaml", "population_features")
    assert paths == {key: block[key] for key in population.PATH_KEYS}
    assert params["population"]["features_dir"] == block["out"]
    assert params["population"]["cohort"] == block["cohort"]
    assert not any(block[key] in stage["cmd"] for key in population.PATH_KEYS)
    assert stage["outs"] == ["${population_features.out}"]
    assert {"${population_features.cohort}", "${population_features.atlas}"} <= set(stage["deps"])
    assert {"lib/medclust/population", "lib/medclust/registration"} <= set(stage["deps"])


def test_extract_cohort_rejects_bad_arguments(data, tmp_path):
    _, cohort, atlas = data
    with pytest.raises(ValueError, match="n_workers"):
        population.extract_cohort(cohort, atlas, tmp_path, PARAMS, n_workers=0)
    with pytest.raises(ValueError, match="n_templates=9"):
        population.build_template_set(atlas, {"n_templates": 9})
    with pytest.raises(ValueError, match="case_ids"):
        population.extract_cohort(
            cohort, atlas, tmp_path, PARAMS, mode="serial", case_ids=["nope"], template_set=1
        )
