"""Multi-template spatial normalisation (medclust.registration; study-05 paper, Sec. 2, Eq. (1))
on the routine_ct phantoms: known transforms are recovered, Eq. (1) picks the source template,
landmarks land on the atlas landmarks, fragments normalise, results are deterministic and
survive pickling, and bad inputs fail with errors that name the problem."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from medclust import registration as reg
from medclust.cohort import load_cohort
from medclust_phantoms import routine_ct as rct
from medclust_phantoms import routine_ct_atlas as rca

N_TEMPLATES = 3


@pytest.fixture(scope="module")
def atlas_cohort(tmp_path_factory):
    return load_cohort(
        rca.generate(tmp_path_factory.mktemp("reg") / "atlas", n_templates=N_TEMPLATES)
    )


@pytest.fixture(scope="module")
def template_set(atlas_cohort):
    return reg.TemplateSet.from_cohort(atlas_cohort)


@pytest.fixture(scope="module")
def patients(tmp_path_factory):
    """Normal thoraxes (no findings to confuse the lung Dice): 3 full FOV, 3 fragments."""
    root = rct.generate(
        tmp_path_factory.mktemp("reg") / "patients",
        n_cases=6,
        phenotype_weights=(1.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        fragment_fraction=0.5,
    )
    return load_cohort(root)


@pytest.fixture(scope="module")
def atlas_landmarks(atlas_cohort):
    return reg.read_landmarks(atlas_cohort.clinical, "atlas")


def patient_landmarks(cohort, case_id: str) -> dict[str, np.ndarray]:
    """True landmark positions (mm of the patient's image) from the generator's plan: the
    canonical landmarks through the patient's transform, shifted by the fragment's first slice."""
    params = json.loads((cohort.root / "dataset.json").read_text())["generator_params"]
    row = cohort.clinical.loc[case_id]
    plan = rct.plan_patient(
        params["seed"],
        int(case_id.split("_")[1]),
        row["phenotype"],
        row["fov"],
        noise_hu=params["noise_hu"],
        deformation_mm=params["deformation_mm"],
    )
    positions = rca.landmark_positions(plan.geometry, params["shape"], params["spacing"])
    start = rct.fov_slab(plan, params["shape"][2]).start * params["spacing"][2]
    return {name: pos - np.array([0.0, 0.0, start]) for name, pos in positions.items()}


def landmark_errors(norm, volume, positions, atlas_landmarks):
    """Distances (mm) between to_atlas_mm of the landmarks inside the volume and the atlas's."""
    names = sorted(positions)
    vox = volume.mm_to_voxel(np.array([positions[n] for n in names]))
    inside = np.all((vox >= 0) & (vox <= np.array(volume.shape) - 1), axis=1)
    ref = np.array([atlas_landmarks[n] for n in names])
    mapped = norm.to_atlas_mm(vox[inside])
    return np.linalg.norm(mapped - ref[inside], axis=1), np.linalg.norm(
        volume.voxel_to_mm(vox[inside]) - ref[inside], axis=1
    )


def lungs(labels) -> np.ndarray:
    return np.isin(labels, (2, 3))


def fingerprint(norm) -> str:
    h = hashlib.sha256()
    h.update(np.asarray(norm.ncc_all).tobytes())
    h.update(np.ascontiguousarray(norm.atlas_labels()).tobytes())
    h.update(norm.to_atlas_mm(np.array([[3.0, 4.0, 5.0], [20.5, 17.25, 9.0]])).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- small pieces


def test_dice_and_ncc_hand_computed():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    assert reg.dice(a, b) == pytest.approx(0.5)  # 2 * 1 / (2 + 2)
    assert reg.dice(a, a) == 1.0
    assert reg.dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    x = np.array([1.0, 2.0, 4.0, 7.0])
    assert reg.ncc(x, 2 * x + 3) == pytest.approx(1.0)
    assert reg.ncc(x, -x) == pytest.approx(-1.0)
    # over a mask the outlier is ignored: (1, 2, 3) against (2, 4, 6)
    assert reg.ncc([1.0, 2.0, 3.0, 100.0], [2.0, 4.0, 6.0, -50.0], [1, 1, 1, 0]) == pytest.approx(
        1.0
    )
    assert reg.ncc(x, np.ones(4)) == 0.0  # constant image: no correlation
    with pytest.raises(ValueError, match="dice: masks differ in shape"):
        reg.dice(a, b[:3])


def test_image3d_geometry_matches_simpleitk(atlas_cohort):
    vol = atlas_cohort.load("atlas")
    img = reg.Image3D.from_volume(vol)
    assert img.shape == vol.image.shape and img.spacing == tuple(vol.spacing)
    np.testing.assert_array_equal(img.labelmap, vol.labelmap)
    itk = img.to_sitk()
    idx = (5, 17, 30)
    assert itk.GetPixel(*idx) == pytest.approx(float(img.array[idx]))  # (x, y, z) kept
    np.testing.assert_allclose(itk.TransformIndexToPhysicalPoint(idx), img.voxel_to_mm(idx)[0])
    pts = np.array([[0.0, 0.0, 0.0], [3.5, 10.0, 2.25]])
    np.testing.assert_allclose(img.mm_to_voxel(img.voxel_to_mm(pts)), pts)
    # write_cohort's affine is diag(spacing): voxel (i, j, k) lies at (i, j, k) * spacing mm
    np.testing.assert_allclose(img.voxel_to_mm(pts), pts * np.array(img.spacing))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"array": np.zeros((4, 4))}, "must be 3-D"),
        ({"labelmap": np.zeros((4, 4, 3), np.uint8)}, r"labelmap shape \(4, 4, 3\) does not match"),
        ({"labelmap": np.zeros((4, 4, 4))}, "labelmap must be integer"),
        ({"array": np.full((4, 4, 4), np.nan)}, "NaN"),
        ({"spacing": (1.0, 1.0, 2.0)}, "does not match the affine's voxel sizes"),
        ({"affine": np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])}, None),
    ],
)
def test_image3d_rejects_bad_input(kwargs, message):
    base = {"array": np.zeros((4, 4, 4)), "spacing": (1.0, 1.0, 1.0), "affine": np.eye(4)}
    base.update(kwargs)
    with pytest.raises(ValueError, match=message or "spacing|shear"):
        reg.Image3D(**base)


def test_build_and_normalize_reject_bad_input(atlas_cohort, template_set):
    atlas = reg.Image3D.from_volume(atlas_cohort.load("atlas"))
    template = reg.Image3D.from_volume(atlas_cohort.load("template_00"))
    empty = reg.Image3D(atlas.array, atlas.spacing, atlas.affine, np.zeros(atlas.shape, np.uint8))
    with pytest.raises(ValueError, match="atlas labelmap is missing or empty"):
        reg.TemplateSet.build(empty, [template])
    with pytest.raises(ValueError, match="templates is empty"):
        reg.TemplateSet.build(atlas, [])
    lm = {"a": (0.0, 0.0, 0.0), "b": (1.0, 0.0, 0.0), "c": (0.0, 1.0, 0.0)}
    with pytest.raises(ValueError, match="template_landmarks has 2 entries for 1 templates"):
        reg.TemplateSet.build(atlas, [template], atlas_landmarks=lm, template_landmarks=[lm, lm])
    with pytest.raises(ValueError, match=">= 4 landmarks"):
        reg.TemplateSet.build(atlas, [template], atlas_landmarks=lm, template_landmarks=[lm])
    with pytest.raises(ValueError, match="registration_spacing_mm must be a positive number"):
        reg.TemplateSet.build(atlas, [template], registration_spacing_mm=-1.0)
    with pytest.raises(TypeError, match="unknown setting"):
        reg.TemplateSet.build(atlas, [template], n_iterations=3)
    with pytest.raises(TypeError, match="volume must be an Image3D"):
        template_set.normalize(template.array)
    with pytest.raises(ValueError, match="template_indices"):
        template_set.normalize(template, template_indices=[N_TEMPLATES])


# --------------------------------------------------------------------------- normalisation


def test_known_affine_of_the_atlas_is_recovered(atlas_cohort, template_set, atlas_landmarks):
    """Volume = atlas under a known affine T (volume mm -> atlas mm): the normalisation must
    reproduce T (landmarks, dense points) and the lungs."""
    atlas = template_set.atlas
    truth = sitk.AffineTransform(3)
    truth.SetCenter(atlas.voxel_to_mm((np.array(atlas.shape) - 1) / 2.0)[0].tolist())
    rotation = sitk.VersorTransform((0.0, 0.0, 1.0), np.deg2rad(4.0)).GetMatrix()
    truth.SetMatrix((np.reshape(rotation, (3, 3)) @ np.diag([1.06, 0.95, 1.03])).ravel().tolist())
    truth.SetTranslation((9.0, -7.0, 12.0))
    image = sitk.Resample(atlas.to_sitk(), truth, sitk.sitkLinear, -1000.0)
    labels = sitk.Resample(atlas.to_sitk(labels=True), truth, sitk.sitkNearestNeighbor, 0)
    volume = reg.Image3D(
        np.rint(reg._to_numpy(image)).astype(np.int16),
        atlas.spacing,
        atlas.affine,
        reg._to_numpy(labels).astype(np.uint8),
    )
    norm = template_set.normalize(volume)
    assert reg.dice(reg.lung_mask(norm), lungs(volume.labelmap)) > 0.9
    for label in (2, 3):
        assert reg.dice(norm.atlas_labels() == label, volume.labelmap == label) > 0.88

    inverse = truth.GetInverse()
    names = sorted(atlas_landmarks)
    positions = {n: np.array(inverse.TransformPoint(tuple(atlas_landmarks[n]))) for n in names}
    errors, before = landmark_errors(norm, volume, positions, atlas_landmarks)
    assert len(errors) >= 10
    assert errors.mean() < 5.0 and errors.max() < 10.0  # voxels are 7.5 x 7.5 x 8 mm
    assert before.mean() > 3 * errors.mean()

    # dense check on the lung voxels: to_atlas_mm against T itself
    vox = np.argwhere(lungs(volume.labelmap))[::25].astype(float)
    expected = np.array([truth.TransformPoint(tuple(p)) for p in volume.voxel_to_mm(vox)])
    assert np.median(np.linalg.norm(norm.to_atlas_mm(vox) - expected, axis=1)) < 5.0


def test_ncc_choice_picks_the_source_template(template_set):
    """A new scan of template k (fresh noise, shifted origin) is normalised through k: its own
    registration T_kA beats every composition through another template (Eq. (1))."""
    rng = np.random.default_rng(7)
    for k, template in enumerate(template_set.templates):
        noisy = np.rint(template.array + rng.normal(0.0, 20.0, template.shape)).astype(np.int16)
        volume = reg.Image3D.from_array(
            noisy, template.spacing, template.labelmap, origin=(6.0, -5.0, 10.0)
        )
        norm = template_set.normalize(volume)
        assert norm.template_index == k
        assert norm.ncc == max(norm.ncc_all) and len(norm.ncc_all) == len(template_set)
        assert norm.ncc > 0.95
        assert reg.dice(reg.lung_mask(norm), lungs(template.labelmap)) > 0.93
    only = template_set.normalize(volume, template_indices=[1])
    assert only.template_index == 1 and only.ncc_all == [norm.ncc_all[1]]


def test_patient_landmarks_map_to_atlas_landmarks(patients, template_set, atlas_landmarks):
    full = [c for c in patients.case_ids if patients.clinical.loc[c, "fov"] == "full"]
    for case_id in full:
        volume = reg.Image3D.from_volume(patients.load(case_id))
        norm = template_set.normalize(volume)
        errors, before = landmark_errors(
            norm, volume, patient_landmarks(patients, case_id), atlas_landmarks
        )
        assert len(errors) == len(rca.LANDMARKS)
        assert errors.mean() < 6.0, (case_id, errors)  # below one voxel (7.5 mm)
        assert errors.mean() < 0.5 * before.mean()
        assert reg.dice(reg.lung_mask(norm), lungs(volume.labelmap)) > 0.9


def test_fragments_normalise(patients, template_set, atlas_landmarks):
    fragments = [c for c in patients.case_ids if patients.clinical.loc[c, "fov"] != "full"]
    assert len(fragments) >= 2
    for case_id in fragments:
        volume = reg.Image3D.from_volume(patients.load(case_id))
        assert volume.shape[2] < 30  # a slab of the 40-slice thorax, re-indexed from 0
        norm = template_set.normalize(volume)
        assert reg.dice(reg.lung_mask(norm), lungs(volume.labelmap)) > 0.85, case_id
        errors, before = landmark_errors(
            norm, volume, patient_landmarks(patients, case_id), atlas_landmarks
        )
        assert len(errors) >= 3
        assert errors.mean() < 8.0, (case_id, errors)
        assert errors.mean() < 0.5 * before.mean()


def test_dense_outputs_are_consistent(patients, template_set):
    volume = reg.Image3D.from_volume(patients.load(patients.case_ids[0]))
    norm = template_set.normalize(volume)
    labels, image = norm.atlas_labels(), norm.atlas_image()
    assert labels.shape == image.shape == volume.shape and image.dtype == np.float32
    np.testing.assert_array_equal(reg.lung_mask(norm), lungs(labels))
    # warped atlas intensities follow the warped labels: lungs dark, heart soft tissue
    assert image[labels == 2].mean() < -600 and abs(image[labels == 5].mean() - 40.0) < 60.0
    assert reg.ncc(volume.array, image) > 0.95
    # to_atlas_mm: exact at voxel centres inside the grid, the transform itself outside it
    inside = np.array([[3.0, 4.0, 5.0], [40.0, 30.0, 20.0]])
    outside = np.array([[-2.0, 5.0, 5.0], [10.0, 60.0, 3.0]])
    for pts in (inside, outside):
        expected = [norm.transform.TransformPoint(tuple(p)) for p in volume.voxel_to_mm(pts)]
        np.testing.assert_allclose(norm.to_atlas_mm(pts), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"points_vox must have shape \(n, 3\)"):
        norm.to_atlas_mm(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="none of lung_labels"):
        reg.lung_mask(norm, lung_labels=(42,))


# --------------------------------------------------------------------------- reproducibility


def test_deterministic_within_and_across_processes(atlas_cohort, patients, template_set):
    volume = reg.Image3D.from_volume(patients.load(patients.case_ids[1]))
    first, second = template_set.normalize(volume), template_set.normalize(volume)
    assert first.ncc_all == second.ncc_all
    assert fingerprint(first) == fingerprint(second)
    # the caller's SimpleITK default thread count does not leak into the result
    ambient = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(3)
    try:
        assert fingerprint(template_set.normalize(volume)) == fingerprint(first)
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 3  # restored
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(ambient)
    # a template set rebuilt from the same inputs has bit-identical transforms
    atlas, template = template_set.atlas, template_set.templates[0]
    one = reg.TemplateSet.build(atlas, [template])
    again = reg.TemplateSet.build(atlas, [template])
    for a, b in zip(one.template_to_atlas[0], again.template_to_atlas[0], strict=True):
        assert a.GetParameters() == b.GetParameters()
    # another Python process builds the same set and normalises to the same bits
    script = (
        "import sys, hashlib, numpy as np\n"
        "from medclust import registration as reg\n"
        "from medclust.cohort import load_cohort\n"
        "atlas = load_cohort(sys.argv[1])\n"
        "ts = reg.TemplateSet.build(\n"
        "    reg.Image3D.from_volume(atlas.load('atlas')),\n"
        "    [reg.Image3D.from_volume(atlas.load('template_00'))],\n"
        ")\n"
        "n = ts.normalize(reg.Image3D.from_volume(load_cohort(sys.argv[2]).load(sys.argv[3])))\n"
        "h = hashlib.sha256()\n"
        "h.update(np.asarray(n.ncc_all).tobytes())\n"
        "h.update(np.ascontiguousarray(n.atlas_labels()).tobytes())\n"
        "h.update(n.to_atlas_mm(np.array([[3.0, 4.0, 5.0], [20.5, 17.25, 9.0]])).tobytes())\n"
        "print(h.hexdigest())\n"
    )
    args = [str(atlas_cohort.root), str(patients.root), patients.case_ids[1]]
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == fingerprint(one.normalize(volume))


def test_template_set_and_normalization_survive_pickle(patients, template_set):
    volume = reg.Image3D.from_volume(patients.load(patients.case_ids[3]))
    norm = template_set.normalize(volume)
    norm.atlas_labels()  # fill the cache; it must not travel
    blob = pickle.dumps(template_set)
    assert len(blob) < 1_500_000 * len(template_set)  # images int16, fields float32
    restored = pickle.loads(blob)
    assert len(restored) == len(template_set)
    assert restored.landmark_error_mm == template_set.landmark_error_mm
    assert fingerprint(restored.normalize(volume)) == fingerprint(norm)
    assert fingerprint(pickle.loads(pickle.dumps(norm))) == fingerprint(norm)
    assert "labels" not in pickle.loads(pickle.dumps(norm))._cache


def test_template_registration_uses_landmarks(template_set):
    """Template -> atlas registrations are landmark-initialised and end within a voxel."""
    errors = np.array(template_set.landmark_error_mm)
    assert errors.shape == (N_TEMPLATES,) and np.all(errors < 5.0)
