"""Tests of the routine chest CT phantom and its atlas/template cohort (tiny cohorts)."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from medclust.cohort import load_cohort
from medclust_phantoms import routine_ct, routine_ct_atlas

SMALL = {"shape": (32, 32, 24), "spacing": (11.25, 11.25, 13.5)}  # 360 x 360 x 324 mm
FULL_GRID = ((48, 48, 40), (7.5, 7.5, 8.0))

# test-side keywords of each finding (independent of the generator's phrase tables)
KEYWORDS = {
    "emphysema": ("emphysem",),
    "nodule": ("nodul",),
    "pleural_effusion": ("effusion", "pleural fluid"),
    "consolidation": ("consolidat",),
    "fibrosis": ("fibros", "fibrotic", "honeycomb", "reticul"),
    "ground_glass": ("ground-glass", "ground glass", "ggo"),
    "cardiomegaly": ("cardiomegaly", "enlarged cardiac", "heart is enlarged", "enlarged heart"),
    "atelectasis": ("atelecta",),
    "lymphadenopathy": ("lymphadenopathy", "adenopathy", "lymph node"),
    "hiatal_hernia": ("hiatal", "hiatus"),
    "atherosclerosis": ("atherosclero", "calcification"),
}
NEGATION = re.compile(r"\b(no|not|without|negative for|free of)\b", re.IGNORECASE)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _sentences(text: str) -> list[str]:
    # distractor "pericardial effusion" is not the pleural finding
    text = text.lower().replace("pericardial effusion", "pericardial fluid collection")
    return [s for s in re.split(r"(?<=[.:])\s+|\n", text) if s.strip()]


def _mentions(sentence: str, finding: str) -> bool:
    return any(k in sentence for k in KEYWORDS[finding])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("routine") / "a"
    return routine_ct.generate(root, n_cases=12, seed=3, **SMALL)


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    root = tmp_path_factory.mktemp("atlas") / "a"
    return routine_ct_atlas.generate(root, n_templates=3, seed=3, **SMALL)


# --------------------------------------------------------------------------- patients


def test_bit_reproducible(tiny, tmp_path):
    again = routine_ct.generate(tmp_path / "b", n_cases=12, seed=3, **SMALL)
    first, second = _files(tiny), _files(again)
    assert sorted(first) == sorted(second)
    assert len(first) == 2 + 2 * 12 + 9  # dataset.json, clinical.csv, images, labelmaps, reports
    for name, data in first.items():
        assert data == second[name], name


def test_seed_changes_images(tiny, tmp_path):
    other = routine_ct.generate(tmp_path / "c", n_cases=2, seed=4, **SMALL)
    a = load_cohort(tiny).load("rct_0000").image
    b = load_cohort(other).load("rct_0000").image
    assert a.shape[:2] == b.shape[:2]
    assert not (a.shape == b.shape and np.array_equal(a, b))


def test_cohort_loads_and_is_consistent(tiny):
    import nibabel as nib

    cohort = load_cohort(tiny, require=("labelmap",))
    assert len(cohort) == 12
    assert cohort.labels == routine_ct.LABELS
    clinical = cohort.clinical
    assert set(clinical["phenotype"]) <= set(routine_ct.PHENOTYPES)
    assert (
        clinical["phenotype_id"] == clinical["phenotype"].map(routine_ct.PHENOTYPES.index)
    ).all()
    for case in cohort:
        assert case.mask is None
        assert np.asarray(nib.load(str(case.image)).dataobj).dtype == np.int16
        assert np.asarray(nib.load(str(case.labelmap)).dataobj).dtype == np.uint8
        vol = cohort.load(case.id)
        row = clinical.loc[case.id]
        assert vol.spacing == pytest.approx(SMALL["spacing"])
        assert vol.image.shape[:2] == SMALL["shape"][:2]
        assert vol.image.shape[2] == row["n_slices"]
        lab, img = vol.labelmap, vol.image
        assert lab.max() <= max(routine_ct.LABELS)
        assert img[lab == 0].mean() < -900  # air outside the body
        lung = np.isin(lab, routine_ct.LUNG_LABELS)
        if lung.sum() > 20:  # aerated lung, unless dense findings fill it
            clear = not any(row[f"visible_{f}"] for f in routine_ct.RENDERED_FINDINGS)
            assert img[lung].mean() < (-600 if clear else -300)
        if row["fov"] == "full":
            assert (lab == 2).sum() > 200 and (lab == 3).sum() > 200
            assert {5, 6, 7, 8} <= set(np.unique(lab))  # heart, aorta, spine, liver
            heart = ndi.binary_erosion(lab == 5)
            assert heart.sum() >= 3 and 10 < img[heart].mean() < 80  # soft-tissue HU


def test_fragments_are_slabs_of_the_thorax(tiny):
    cohort = load_cohort(tiny, require=("labelmap",))
    clinical = cohort.clinical
    assert (clinical["fov"] == "full").sum() == 9
    assert set(clinical["fov"]) == {"full", "upper", "lower"}
    full = clinical[clinical["fov"] == "full"]
    assert (full["n_slices"] == SMALL["shape"][2]).all()
    for cid, row in clinical[clinical["fov"] != "full"].iterrows():
        assert 3 <= row["n_slices"] < SMALL["shape"][2]
        assert (
            row["z_end_mm"] - row["z_start_mm"] < full["z_end_mm"].min() - full["z_start_mm"].max()
        )
        labels = set(np.unique(cohort.load(cid).labelmap))
        if row["fov"] == "upper":
            assert row["z_end_mm"] > 100 and 4 in labels  # lung apices, trachea
        else:
            assert row["z_start_mm"] < -100 and 8 in labels  # lung bases, liver
    assert (full["z_start_mm"] < -120).all() and (full["z_end_mm"] > 120).all()


def test_fragment_is_the_slab_of_the_full_image():
    plan = routine_ct.plan_patient(7, 2, "heart_failure", "full").with_findings(
        pleural_effusion=True
    )
    full = routine_ct.render_patient(plan, *FULL_GRID)
    for fov in ("upper", "lower"):
        part = routine_ct.render_patient(replace(plan, fov=fov), *FULL_GRID)
        cut = (slice(None), slice(None), part.slab)
        assert part.image.shape[2] < full.image.shape[2]
        np.testing.assert_array_equal(part.image, full.image[cut])
        np.testing.assert_array_equal(part.labelmap, full.labelmap[cut])
        assert part.visible["pleural_effusion"] == bool((part.labelmap == 10).any())
    assert full.visible["pleural_effusion"]
    assert routine_ct.fov_slab(replace(plan, fov="upper"), 40).stop >= 36
    assert routine_ct.fov_slab(replace(plan, fov="lower"), 40).start <= 4


def test_clinical_table(tiny):
    clinical = pd.read_csv(tiny / "clinical.csv")
    assert list(clinical.columns[:3]) == ["case_id", "phenotype", "phenotype_id"]
    for kind in ("finding", "visible", "mentioned"):
        cols = [f"{kind}_{f}" for f in routine_ct.FINDINGS]
        assert set(cols) <= set(clinical.columns)
        assert clinical[cols].isin([0, 1]).all().all()
    for f in routine_ct.FINDINGS:
        assert (clinical[f"visible_{f}"] <= clinical[f"finding_{f}"]).all()
        assert (clinical[f"mentioned_{f}"] <= clinical[f"finding_{f}"]).all()
        assert (clinical[f"mentioned_{f}"] <= clinical["has_report"]).all()
    for f in routine_ct.UNRENDERED_FINDINGS:
        assert (clinical[f"visible_{f}"] == 0).all()
    assert {"has_report", "fov", "z_start_mm", "z_end_mm", "age", "sex"} <= set(clinical.columns)
    assert clinical["age"].between(18, 95).all() and set(clinical["sex"]) <= {"F", "M"}


def test_report_fraction_matches_has_report(tiny):
    cohort = load_cohort(tiny)
    meta = json.loads((tiny / "dataset.json").read_text())
    with_report = {c["id"] for c in meta["cases"] if "report" in c}
    has = cohort.clinical["has_report"]
    assert with_report == set(has.index[has == 1])
    assert has.sum() == round(12 * routine_ct.DEFAULTS["report_fraction"]) == 9
    for case in cohort:
        text = case.read_report()
        assert (text is not None) == bool(has[case.id])
        if text is not None:
            assert "FINDINGS:" in text and "IMPRESSION:" in text


def test_cohort_assignments_are_exact():
    phenos, fovs, reports = routine_ct.cohort_assignments(0, 200, (3, 1, 1, 1, 1, 1), 0.25, 0.75)
    counts = pd.Series(phenos).value_counts()
    assert counts["normal"] == 75 and counts.sum() == 200
    assert pd.Series(fovs).value_counts().to_dict() == {"full": 150, "upper": 25, "lower": 25}
    assert reports.sum() == 150
    again = routine_ct.cohort_assignments(1, 200, (3, 1, 1, 1, 1, 1), 0.25, 0.75)
    assert again[0] != phenos  # shuffled by the seed
    assert routine_ct.exact_counts(7812, (5886, 7812 - 5886)).tolist() == [5886, 1926]


def test_reports_negate_absent_findings_and_mention_present_ones():
    corpus = []
    for i in range(240):
        plan = routine_ct.plan_patient(
            11, i, routine_ct.PHENOTYPES[i % 6], ("full", "upper")[i % 2]
        )
        visible = {f: bool(i % 5) for f in routine_ct.FINDINGS}  # some outside the FOV
        text, mentioned = routine_ct.compose_report(plan, visible)
        corpus.append(text)
        sentences = _sentences(text)
        assert mentioned <= plan.present
        for f in routine_ct.FINDINGS:
            hits = [s for s in sentences if _mentions(s, f)]
            if f not in plan.present:
                # an absent finding only ever appears negated
                assert all(NEGATION.search(s) for s in hits), (f, hits)
            elif f in mentioned:
                assert hits, (f, text)
            else:
                assert not hits, (f, text)  # missed: not mentioned, and never negated
    text = "\n".join(corpus).lower()
    # varied phrasing: several synonyms and modifiers occur
    for phrase in ("pleural fluid", "pleural effusion", "ggo", "ground-glass", "honeycombing"):
        assert phrase in text, phrase
    for phrase in ("no pleural effusion", "no evidence of", "without", "bilateral", "small"):
        assert phrase in text, phrase
    assert "outside the" in text  # present findings outside a fragment's field of view


def test_miss_rate_and_outside_fov_mentions():
    present, mentioned_visible, mentioned_outside, n_outside = 0, 0, 0, 0
    for i in range(300):
        plan = routine_ct.plan_patient(2, i, "lung_cancer").with_findings(nodule=True)
        _, all_visible = routine_ct.compose_report(plan, dict.fromkeys(routine_ct.FINDINGS, True))
        _, none_visible = routine_ct.compose_report(plan, dict.fromkeys(routine_ct.FINDINGS, False))
        present += 1
        mentioned_visible += "nodule" in all_visible
        mentioned_outside += "nodule" in none_visible
        n_outside += 1
    assert 0.82 < mentioned_visible / present < 0.97  # miss rate 0.1
    assert 0.35 < mentioned_outside / n_outside < 0.65  # half of the out-of-view findings
    plan = routine_ct.plan_patient(2, 0, "lung_cancer").with_findings(nodule=True)
    _, never_missed = routine_ct.compose_report(plan, {"nodule": True}, miss_rate=0.0)
    assert "nodule" in never_missed


def _lung_stats(image, lung):
    values = image[lung].astype(float)
    return values.mean(), (values < -950).mean()


def test_findings_change_the_image_where_they_lie():
    base_plan = routine_ct.plan_patient(5, 0, "lung_cancer").with_findings(
        **dict.fromkeys(routine_ct.FINDINGS, False)
    )
    base = routine_ct.render_patient(base_plan, *FULL_GRID)
    lab = base.labelmap
    lung = np.isin(lab, routine_ct.LUNG_LABELS)
    assert lung.sum() > 3000 and not any(base.visible.values())
    mean0, laa0 = _lung_stats(base.image, lung)

    def with_(name):
        out = routine_ct.render_patient(base_plan.with_findings(**{name: True}), *FULL_GRID)
        assert out.visible[name]
        mask = out.finding_masks[name]
        # the rest of the image is untouched: changes stay within the blur kernel (3 voxels
        # per axis) of the finding or of the organs it displaces
        changed = out.image != base.image
        moved = mask | (out.labelmap != lab)
        reach = ndi.binary_dilation(moved, ndi.generate_binary_structure(3, 3), iterations=3)
        assert not (changed & ~reach).any(), name
        return out, mask

    out, mask = with_("emphysema")
    mean1, laa1 = _lung_stats(out.image, lung)
    assert mean1 < mean0 - 15 and laa1 > laa0 + 0.03  # low-attenuation areas (< -950 HU)
    zc = ndi.center_of_mass(mask)[2]
    assert zc > ndi.center_of_mass(lung)[2]  # upper-lobe predominant
    np.testing.assert_array_equal(out.labelmap, lab)

    out, mask = with_("pleural_effusion")
    fluid = out.labelmap == 10
    assert fluid.sum() > 30 and np.array_equal(fluid, mask)
    assert -20 < out.image[ndi.binary_erosion(fluid)].mean() < 50  # fluid HU
    assert np.isin(out.labelmap, routine_ct.LUNG_LABELS).sum() < lung.sum()  # compressed lung
    centre_fluid, centre_lung = ndi.center_of_mass(fluid), ndi.center_of_mass(lung)
    assert centre_fluid[1] > centre_lung[1] and centre_fluid[2] < centre_lung[2]  # post., inf.

    out, mask = with_("cardiomegaly")
    assert (out.labelmap == 5).sum() > 1.2 * (lab == 5).sum()

    out, mask = with_("nodule")  # lung cancer: one nodule of 14-25 mm
    added = out.image[mask].astype(float) - base.image[mask]
    assert added.max() > 250 and added.mean() > 100

    for name, low, high in (
        ("consolidation", -150, 80),
        ("ground_glass", -750, -450),
        ("atelectasis", -150, 80),
    ):
        out, mask = with_(name)
        core = ndi.binary_erosion(mask) if ndi.binary_erosion(mask).sum() > 5 else mask
        assert low < out.image[core].mean() < high, name
        assert out.image[core].mean() > base.image[core].mean() + 150, name

    out, mask = with_("fibrosis")
    added = out.image[mask].astype(float) - base.image[mask]
    assert added.mean() > 80 and added.std() > 60  # denser, with a voxel-scale pattern
    assert ndi.center_of_mass(mask)[2] < ndi.center_of_mass(lung)[2]  # basal


def test_plan_switches_findings():
    plan = routine_ct.plan_patient(0, 1, "copd")
    on = plan.with_findings(fibrosis=True, emphysema=False)
    assert "fibrosis" in on.present and "emphysema" not in on.present
    assert on.geometry is plan.geometry
    with pytest.raises(ValueError, match="tumour"):
        plan.with_findings(tumour=True)


def test_geometry_is_invertible_and_bounded():
    rng = np.random.default_rng(0)
    for k in range(10):
        g = routine_ct.draw_geometry(np.random.default_rng(k), 6.0)
        assert 0.88 <= g.scale <= 1.12 and g.rotation_deg < 8.0
        assert 2.0 < g.deformation_rms_mm <= 6.0 + 1e-9
        c = rng.uniform(-150, 150, (3, 50))
        q = g.from_canonical(c)
        np.testing.assert_allclose(g.to_canonical(q), c, atol=1e-6)
        grid = routine_ct.grid_points(*FULL_GRID)
        assert np.abs(g.displacement(grid)).max() < 25.0
    identity = routine_ct.IDENTITY
    np.testing.assert_allclose(identity.to_canonical(c), c)


# --------------------------------------------------------------------------- atlas


def test_atlas_cohort_loads(atlas):
    cohort = load_cohort(atlas, require=("labelmap",))
    assert cohort.case_ids == ["atlas", "template_00", "template_01", "template_02"]
    clinical = cohort.clinical
    assert list(clinical["role"]) == ["atlas", "template", "template", "template"]
    vols = {cid: cohort.load(cid) for cid in cohort.case_ids}
    for vol in vols.values():
        assert vol.image.shape == SMALL["shape"]
        assert (vol.labelmap == 2).sum() > 100 and (vol.labelmap == 3).sum() > 100
        assert not (vol.labelmap == 10).any()  # no findings
    atlas_img, atlas_lab = vols["atlas"].image, vols["atlas"].labelmap
    liver = ndi.binary_erosion(atlas_lab == 8, iterations=1)
    assert atlas_img[liver].std() < 5.0  # the atlas has no scanner noise
    for cid in cohort.case_ids[1:]:
        tmpl = vols[cid]
        assert not np.array_equal(tmpl.labelmap, atlas_lab)
        t_liver = ndi.binary_erosion(tmpl.labelmap == 8, iterations=1)
        assert tmpl.image[t_liver].std() > 10.0
        dice = (
            2
            * ((tmpl.labelmap == 2) & (atlas_lab == 2)).sum()
            / ((tmpl.labelmap == 2).sum() + (atlas_lab == 2).sum())
        )
        assert 0.5 < dice < 0.99  # same anatomy, deformed


def test_atlas_landmarks_lie_in_their_organs(atlas):
    cohort = load_cohort(atlas, require=("labelmap",))
    spacing = np.asarray(SMALL["spacing"])
    assert len(routine_ct_atlas.LANDMARKS) >= 10
    for cid in cohort.case_ids:
        lab = cohort.load(cid).labelmap
        row = cohort.clinical.loc[cid]
        for name, (_, label) in routine_ct_atlas.LANDMARKS.items():
            pos = np.array([row[f"lm_{name}_{a}"] for a in "xyz"])
            idx = tuple(np.rint(pos / spacing).astype(int))
            assert lab[idx] == label, (cid, name, lab[idx], label)
    atlas_row = cohort.clinical.loc["atlas"]
    centre = routine_ct.grid_centre(*SMALL.values())
    carina = routine_ct.ANATOMY.carina
    for k, a in enumerate("xyz"):
        assert atlas_row[f"lm_carina_{a}"] == pytest.approx(carina[k] + centre[k], abs=0.01)
    heart = np.array(
        [[cohort.clinical.loc[c, f"lm_heart_centre_{a}"] for a in "xyz"] for c in cohort.case_ids]
    )
    assert np.ptp(heart, axis=0).max() > 3.0  # templates move the landmarks


def test_atlas_bit_reproducible_and_seeded(atlas, tmp_path):
    again = routine_ct_atlas.generate(tmp_path / "b", n_templates=3, seed=3, **SMALL)
    first, second = _files(atlas), _files(again)
    assert first == second
    other = routine_ct_atlas.generate(tmp_path / "c", n_templates=1, seed=4, **SMALL)
    a = load_cohort(atlas).load("template_00").image
    b = load_cohort(other).load("template_00").image
    assert not np.array_equal(a, b)
    # the atlas anatomy does not depend on the seed or the number of templates
    a_lab = load_cohort(atlas).load("atlas").labelmap
    np.testing.assert_array_equal(a_lab, load_cohort(other).load("atlas").labelmap)


def test_templates_differ_from_patients_of_the_same_seed(tmp_path):
    img, _, plan = routine_ct_atlas.make_template(0, 0, *FULL_GRID)
    patient = routine_ct.plan_patient(0, 0, "normal")
    assert not np.allclose(plan.geometry.linear, patient.geometry.linear)
    assert plan.present == frozenset()


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("n_cases", 0),
        ("n_cases", 2.5),
        ("seed", -1),
        ("shape", (32, 32)),
        ("shape", (8, 32, 24)),
        ("spacing", (11.25, 0.0, 13.5)),
        ("spacing", (2.0, 2.0, 2.0)),
        ("phenotype_weights", (1, 1, 1)),
        ("phenotype_weights", (0, 0, 0, 0, 0, 0)),
        ("fragment_fraction", 1.5),
        ("report_fraction", "most"),
        ("miss_rate", -0.1),
        ("noise_hu", (40.0, 15.0)),
        ("deformation_mm", 50.0),
    ],
)
def test_bad_params(tmp_path, param, value):
    params = {**SMALL, param: value}
    with pytest.raises(ValueError, match=param):
        routine_ct.generate(tmp_path / "bad", **params)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("n_templates", 0),
        ("shape", (32, 32, 4)),
        ("spacing", (100.0, 100.0, 100.0)),
        ("noise_hu", (-1.0, 5.0)),
        ("deformation_mm", -1.0),
    ],
)
def test_bad_atlas_params(tmp_path, param, value):
    params = {**SMALL, param: value}
    with pytest.raises(ValueError, match=param):
        routine_ct_atlas.generate(tmp_path / "bad", **params)
    assert not (tmp_path / "bad").exists()


def test_unknown_param(tmp_path):
    with pytest.raises(TypeError, match="colour"):
        routine_ct.generate(tmp_path / "bad", colour="red")
    with pytest.raises(TypeError, match="n_cases"):
        routine_ct_atlas.generate(tmp_path / "bad", n_cases=3)
