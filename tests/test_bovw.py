"""Bag of visual words (study 05, Sec. 2 "Bag of Words"): position augmentation, vocabularies,
word-count histograms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from medclust.features.bovw import (
    FEATURE_KINDS,
    MICRO_MAX_DIAMETER_MM,
    POSITION_SCALE_MM,
    Vocabulary,
    augment_with_position,
    local_features,
)


def _volumes(seed: int = 0, sizes=(40, 0, 25, 60), n_columns: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    scales = np.array([1.0, 10.0, 0.01, 100.0, 3.0])[:n_columns]  # Haralick-like spread of units
    return [rng.normal(size=(n, n_columns)) * scales for n in sizes]


def _quadrants(n_per: int = 50, seed: int = 0):
    """Features whose appearance (2 groups) and atlas position (left/right, x = -+100 mm) vary
    independently: group labels of both, descriptors and positions."""
    rng = np.random.default_rng(seed)
    appearance = np.repeat([0, 1, 0, 1], n_per)
    side = np.repeat([0, 0, 1, 1], n_per)
    desc = np.where(appearance[:, None] == 1, 1.0, -1.0) * np.ones((1, 2))
    desc = desc + rng.normal(scale=0.05, size=desc.shape)
    pos = np.column_stack(
        [np.where(side == 1, 100.0, -100.0), np.zeros(len(side)), np.zeros(len(side))]
    )
    pos = pos + rng.normal(scale=2.0, size=pos.shape)
    return appearance, side, desc, pos


# --------------------------------------------------------------------------- augmentation


def test_augment_with_position_hand_computed_scaling():
    desc = np.arange(24.0).reshape(2, 12)
    pos = np.array([[30.0, -60.0, 0.0], [0.0, 15.0, 90.0]])
    # D = 12: factor = weight * sqrt(12 / 3) / scale_mm = 2 * 2 / 60 = 1 / 15
    out = augment_with_position(desc, pos, weight=2.0, scale_mm=60.0)
    assert out.shape == (2, 15)
    np.testing.assert_array_equal(out[:, :12], desc)
    np.testing.assert_allclose(out[:, 12:], [[2.0, -4.0, 0.0], [0.0, 1.0, 6.0]])
    # weight 0: positions appended as zeros, i.e. ignored by the vocabulary
    np.testing.assert_array_equal(augment_with_position(desc, pos, 0.0)[:, 12:], 0.0)


def test_position_scale_balances_appearance_and_position():
    """With weight 1 and positions of per-axis sd POSITION_SCALE_MM, the position block has the
    same total variance as D standardised appearance columns (module docstring)."""
    rng = np.random.default_rng(1)
    d = 13
    desc = rng.normal(size=(20000, d))  # standardised appearance: total variance d
    pos = rng.normal(scale=POSITION_SCALE_MM, size=(20000, 3))
    out = augment_with_position(desc, pos, weight=1.0)
    assert out[:, d:].var(axis=0).sum() == pytest.approx(d, rel=0.05)


def test_position_scale_matches_phantom_atlas_lungs(tmp_path):
    from medclust.cohort import load_cohort
    from medclust_phantoms import routine_ct, routine_ct_atlas

    root = routine_ct_atlas.generate(tmp_path / "atlas", n_templates=1)
    atlas = load_cohort(root).load("atlas")
    mm = np.argwhere(np.isin(atlas.labelmap, routine_ct.LUNG_LABELS)) * np.array(atlas.spacing)
    rms_sd = math.sqrt((mm.std(axis=0) ** 2).mean())
    assert rms_sd == pytest.approx(POSITION_SCALE_MM, rel=0.1)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"weight": -1.0}, "weight"),
        ({"weight": float("nan")}, "weight"),
        ({"weight": 1.0, "scale_mm": 0.0}, "scale_mm"),
    ],
)
def test_augment_with_position_rejects_bad_params(kwargs, name):
    with pytest.raises(ValueError, match=name):
        augment_with_position(np.zeros((2, 4)), np.zeros((2, 3)), **kwargs)


def test_augment_with_position_rejects_mismatched_rows_and_columns():
    with pytest.raises(ValueError, match="atlas_mm has 3 rows"):
        augment_with_position(np.zeros((2, 4)), np.zeros((3, 3)), 1.0)
    with pytest.raises(ValueError, match="atlas_mm has 2 columns"):
        augment_with_position(np.zeros((2, 4)), np.zeros((2, 2)), 1.0)


def test_position_weight_decides_word_assignment():
    appearance, side, desc, pos = _quadrants()

    def words(weight: float, n_words: int) -> np.ndarray:
        x = augment_with_position(desc, pos, weight)
        return Vocabulary(n_words=n_words, seed=0, position_columns=3).fit([x]).predict(x)

    # no position: the two words are the two appearance groups, whatever the side
    w0 = words(0.0, 2)
    assert adjusted_rand_score(appearance, w0) == 1.0
    assert adjusted_rand_score(side, w0) == pytest.approx(0.0, abs=0.02)
    # position weighs 3x appearance: the two words are left and right lung
    w3 = words(3.0, 2)
    assert adjusted_rand_score(side, w3) == 1.0
    assert adjusted_rand_score(appearance, w3) == pytest.approx(0.0, abs=0.02)
    # equal weight, four words: one word per (appearance, side) pair -- spatio-visual words
    w1 = words(1.0, 4)
    assert adjusted_rand_score(appearance * 2 + side, w1) == 1.0


def test_vocabulary_keeps_position_scaling_but_standardises_appearance():
    _, _, desc, pos = _quadrants()
    x = augment_with_position(desc * [1.0, 1000.0], pos, 1.0)
    voc = Vocabulary(n_words=2, seed=0, position_columns=3).fit([x[:100], x[100:]])
    np.testing.assert_allclose(voc.mean_, x.mean(axis=0))
    np.testing.assert_allclose(voc.scale_[:2], x[:, :2].std(axis=0))
    np.testing.assert_array_equal(voc.scale_[2:], 1.0)


# --------------------------------------------------------------------------- vocabulary


def test_histograms_count_every_local_feature_of_each_volume():
    volumes = _volumes()
    voc = Vocabulary(n_words=6, seed=0).fit(volumes)
    hist = voc.transform(volumes)
    assert hist.shape == (4, 6)
    assert hist.dtype == np.int64
    np.testing.assert_array_equal(hist.sum(axis=1), [len(v) for v in volumes])
    # a row is the bincount of the volume's predicted words
    for v, row in zip(volumes, hist, strict=True):
        np.testing.assert_array_equal(row, np.bincount(voc.predict(v), minlength=6))
    assert voc.predict(volumes[1]).shape == (0,)


def test_fit_is_deterministic_under_a_seed():
    volumes = _volumes()
    a = Vocabulary(n_words=5, seed=3, max_per_volume=30).fit(volumes)
    b = Vocabulary(n_words=5, seed=3, max_per_volume=30).fit(volumes)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.transform(volumes), b.transform(volumes))


def test_max_per_volume_subsamples_each_volume():
    volumes = _volumes(sizes=(40, 0, 25, 60))
    voc = Vocabulary(n_words=4, seed=0, max_per_volume=30).fit(volumes)
    assert voc.n_training_features_ == 30 + 0 + 25 + 30
    assert Vocabulary(n_words=4).fit(volumes).n_training_features_ == 125


def test_standardisation_is_fitted_with_the_vocabulary():
    volumes = _volumes()
    pooled = np.concatenate(volumes)
    voc = Vocabulary(n_words=3, seed=0).fit(volumes)
    np.testing.assert_allclose(voc.mean_, pooled.mean(axis=0))
    np.testing.assert_allclose(voc.scale_, pooled.std(axis=0))
    # the words live in the standardised space: a centre maps back to a plausible feature
    assert np.all(np.abs(voc.cluster_centers_) < 3)
    raw = Vocabulary(n_words=3, seed=0, standardize=False).fit(volumes)
    np.testing.assert_array_equal(raw.scale_, 1.0)


def test_constant_column_is_only_centred():
    x = np.column_stack([np.arange(10.0), np.full(10, 7.0)])
    voc = Vocabulary(n_words=2, seed=0).fit([x])
    assert voc.scale_[1] == 1.0
    assert voc.mean_[1] == 7.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_words": 0}, "n_words"),
        ({"n_words": 2.5}, "n_words"),
        ({"seed": -1}, "seed"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_per_volume": 0}, "max_per_volume"),
        ({"position_columns": -1}, "position_columns"),
        ({"position_columns": 9}, "position_columns"),
        ({"standardize": "yes"}, "standardize"),
        ({"n_init": 0}, "n_init"),
        ({"max_iter": True}, "max_iter"),
        ({"n_words": 500}, "n_words"),
    ],
)
def test_vocabulary_rejects_bad_params(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Vocabulary(**kwargs).fit(_volumes())


def test_vocabulary_rejects_bad_features():
    with pytest.raises(ValueError, match="one .* array of local features per volume"):
        Vocabulary(n_words=2).fit(np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"features\[1\] has 4 columns, expected 3"):
        Vocabulary(n_words=2).fit([np.zeros((5, 3)), np.zeros((5, 4))])
    with pytest.raises(ValueError, match="NaN"):
        Vocabulary(n_words=2).fit([np.full((5, 3), np.nan)])
    with pytest.raises(ValueError, match="not fitted"):
        Vocabulary(n_words=2).transform([np.zeros((5, 3))])
    voc = Vocabulary(n_words=2).fit([np.random.default_rng(0).normal(size=(6, 3))])
    with pytest.raises(ValueError, match="expected 3"):
        voc.transform([np.zeros((2, 5))])


# --------------------------------------------------------------------------- records


def test_local_features_splits_micro_and_macro_sift_at_two_centimetres():
    rec = {
        "case_id": "c0",
        "haralick": np.ones((3, 13)),
        "haralick_pos": np.zeros((3, 3)),
        "sift": np.arange(4.0)[:, None] * np.ones((1, 160)),
        "sift_pos": np.zeros((4, 3)),
        "sift_diameter_mm": np.array([10.0, MICRO_MAX_DIAMETER_MM, 20.5, 40.0]),
    }
    feats = {kind: local_features([rec], kind, position_weight=0.5)[0] for kind in FEATURE_KINDS}
    assert feats["haralick"].shape == (3, 16)
    # <= 2 cm is micro (the paper's split), > 2 cm macro
    np.testing.assert_array_equal(feats["micro_sift"][:, 0], [0.0, 1.0])
    np.testing.assert_array_equal(feats["macro_sift"][:, 0], [2.0, 3.0])
    assert feats["micro_sift"].shape == (2, 163)
    empty = dict(rec, sift_diameter_mm=np.full(4, 50.0))
    assert local_features([empty], "micro_sift")[0].shape == (0, 163)
    with pytest.raises(ValueError, match="kind"):
        local_features([rec], "sift")
    with pytest.raises(ValueError, match="record 'c0' lacks 'sift_pos'"):
        local_features([{k: v for k, v in rec.items() if k != "sift_pos"}], "macro_sift")
