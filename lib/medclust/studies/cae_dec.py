"""Study 04: the convolutional autoencoder of Quarenghi's thesis with DEC, DCEC and IDEC on 2D
head CT / MRI / PET images (``notebooks/04_cae_dec_dcec.ipynb``).

The glue of the notebook, in the order of the thesis: the images and their 70:10:20 split
(Sec. 3.1), the pretraining and fine-tuning runs (Sec. 3.3, one CAE per embedding dimension and
seed), their scores on the test split (Tables 3.4-3.6), the figures (Figs. 3.4-3.10) and the
thesis' numbers beside this run's. The method itself -- ``CAEEmbedding(...).fit``,
``DEC(...).fit``, ``DCEC(...).fit`` -- stays in the notebook.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import pairwise_distances_argmin
from umap import UMAP

from medclust import comparison as cmp
from medclust import metrics as cm
from medclust.cohort import Cohort, Volume
from medclust.intensity import rescale_percentiles
from medclust.models import DCEC, DEC, CAEEmbedding
from medclust.plots import voronoi_projection
from medclust.studies.common import (
    SplitMasks,
    mean_sd,
    mean_sd_table,
    sd_or_zero,
    verdict_clause,
    with_chance_row,
)

#: Notebook params that must be integers >= 1 (checked by ``studies.common.start``).
INT_PARAMS = (
    "image_px",
    "slices_per_volume",
    "embedding_dim",
    "pretrain_steps",
    "pretrain_batch_size",
    "batch_size",
    "n_seeds",
)
#: Rows of Tables 3.4-3.5 (and of the per-seed results), in this order, and their labels:
#: one cluster, the thesis' three methods, IDEC, the classical baselines and the ceiling (the
#: table adds the chance level of DEC's clusters above them).
ORDER = [
    "one_cluster",
    "kmeans_cae",
    "dec",
    "dcec",
    "idec",
    "pca_kmeans",
    "raw_kmeans",
    "true_classes",
]
NAMES = {
    "chance": "chance (permutation null at DEC's cluster sizes)",
    "one_cluster": "one cluster (MSE: the mean image)",
    "kmeans_cae": "k-means + CAE",
    "dec": "DEC",
    "dcec": "DCEC",
    "idec": "IDEC (gamma 0.1)",
    "pca_kmeans": "k-means on PCA-d pixels (MSE: PCA-d reconstruction)",
    "raw_kmeans": "k-means on raw pixels",
    "true_classes": "true modality (ceiling)",
}
#: The names in the plain sentences (without the table's notes in brackets).
SHORT = {m: name.split(" (")[0] for m, name in NAMES.items()}
#: The deep heads (they have iterations, convergence and KL divergence).
HEADS = ["dec", "dcec", "idec"]
#: The paired comparisons behind the verdicts: the thesis' claims (DEC best, DCEC no better
#: than k-means on the pretrained CAE, Sec. 3.3) and DEC against the pixel baselines.
COMPARISONS = [
    ("dec", "kmeans_cae"),
    ("dcec", "kmeans_cae"),
    ("dec", "dcec"),
    ("idec", "kmeans_cae"),
    ("dec", "pca_kmeans"),
    ("dec", "raw_kmeans"),
]
#: Bootstrap draws of the test images (and seeds); permutations of each chance level.
N_BOOT, N_PERM = 1000, 1000
#: The methods of the thesis' embedding-dimension sweep (Table 3.6).
SWEEP_METHODS = ["kmeans_cae", "dec", "dcec", "pca_kmeans"]
#: Test ACC / NMI of the thesis: Tables 3.4-3.5 (dimension 3) and 3.6 (10, 30).
THESIS = {
    ("kmeans_cae", 3): (0.622, 0.392),
    ("dec", 3): (0.805, 0.613),
    ("dcec", 3): (0.638, 0.412),
    ("kmeans_cae", 10): (0.656, 0.491),
    ("dec", 10): (0.659, 0.548),
    ("dcec", 10): (0.665, 0.498),
    ("kmeans_cae", 30): (0.578, 0.414),
    ("dec", 30): (0.654, 0.530),
    ("dcec", 30): (0.605, 0.458),
}
#: The MSE of the pretrained CAE on the validation images (thesis Sec. 3.3.1, Fig. 3.4).
THESIS_PRETRAIN_MSE = 0.0024
#: ``metrics.json`` (dvc metrics show / diff): test accuracy; ``tables/metrics_all.json``: all.
HEADLINE = {
    "dec": "acc.dec",
    "dcec": "acc.dcec",
    "idec": "acc.idec",
    "km_cae": "acc.kmeans_cae",
    "km_pca": "acc.pca_kmeans",
    "km_raw": "acc.raw_kmeans",
    "converged": "converged_fraction",
    "acc_chance": "acc_chance.dec",
}


# --------------------------------------------------------------------------- params


def embedding_dims(sweep_dims: str, embedding_dim: int, image_px: int) -> list[int]:
    """The embedding dimensions of the sweep (Table 3.6: ``"3,10,30"``) with ``embedding_dim``,
    sorted; also checks that ``image_px`` suits the strides 4, 4, 2 of Table 3.2."""
    try:
        dims = sorted({int(d) for d in str(sweep_dims).split(",")} | {embedding_dim})
    except ValueError as exc:
        raise ValueError(
            "param sweep_dims must be comma-separated integers such as '3,10,30', "
            f"got {sweep_dims!r}"
        ) from exc
    if image_px % 32:
        raise ValueError(
            "param image_px must be a multiple of 32 (strides 4, 4, 2 of Table 3.2), "
            f"got {image_px}"
        )
    return dims


def runs(embedding_dim: int, dims: Iterable[int], seeds: Sequence[int]) -> list[tuple[int, int]]:
    """``(embedding dimension, seed)`` of each autoencoder: every seed at ``embedding_dim``
    (Tables 3.4-3.5 over seeds), the first seed at the other dimensions (Table 3.6)."""
    first = seeds[0]
    return [(embedding_dim, s) for s in seeds] + [(d, first) for d in dims if d != embedding_dim]


# --------------------------------------------------------------------------- data (Sec. 3.1)


def case_images(volume: Volume, image_px: int, slices_per_volume: int) -> list[np.ndarray]:
    """The 2D images of one case, each rescaled to [0, 1] between its 0.5th and 99.5th
    percentiles and resized (bilinear) to ``image_px``; a 3D case gives ``slices_per_volume``
    evenly spaced axial slices (through the mask when there is one)."""
    image = volume.image
    if image.ndim == 2:
        planes = [image]
    else:
        zs = np.arange(image.shape[2])
        if volume.mask is not None:
            zs = np.flatnonzero(volume.mask.reshape(-1, image.shape[2]).any(axis=0))
        n = min(slices_per_volume, len(zs))
        picks = zs[np.linspace(0, len(zs) - 1, n).round().astype(int)]
        planes = [image[:, :, z] for z in np.unique(picks)]
    out = []
    for plane in planes:
        t = torch.from_numpy(rescale_percentiles(plane))[None, None]
        if t.shape[-2:] != (image_px, image_px):
            t = torch.nn.functional.interpolate(
                t, size=(image_px, image_px), mode="bilinear", align_corners=False
            )
        out.append(t[0, 0].numpy())
    return out


def case_splits(data: Cohort, split_column: str, label_column: str, seed: int) -> np.ndarray:
    """train / val / test per case: the cohort's ``split_column`` when it has one, else a
    70:10:20 split by case (slices of one case never straddle train and test), stratified by
    ``label_column`` and seeded (thesis Sec. 3.1)."""
    if split_column in data.clinical.columns:
        splits = data.clinical[split_column].astype(str)
        bad = sorted(set(splits) - {"train", "val", "test"})
        if bad:
            raise ValueError(
                f"{data.root / 'clinical.csv'}: column {split_column!r} has values {bad}; "
                "expected train/val/test"
            )
        return splits.to_numpy()
    rng = np.random.default_rng(seed)
    splits = np.empty(len(data), dtype=object)
    for _, idx in data.clinical.reset_index().groupby(label_column).indices.items():
        idx = rng.permutation(idx)
        n_train, n_val = int(round(0.7 * len(idx))), int(round(0.1 * len(idx)))
        splits[idx[:n_train]] = "train"
        splits[idx[n_train : n_train + n_val]] = "val"
        splits[idx[n_train + n_val :]] = "test"
    return splits


@dataclass
class HeadImages(SplitMasks):
    """The images of the study: ``X`` (n, px, px) float32, the label ``y`` (the modality) and
    the ``split`` of each image, and the case it comes from."""

    X: np.ndarray
    y: np.ndarray
    split: np.ndarray
    case_ids: np.ndarray
    label_column: str

    @property
    def X_train(self) -> np.ndarray:
        return self.X[self.train]

    @property
    def X_test(self) -> np.ndarray:
        return self.X[self.test]

    @property
    def X_val(self) -> np.ndarray | None:
        """The validation images, None when the split has none."""
        return self.X[self.val] if self.val.any() else None

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.y))

    @property
    def n_clusters(self) -> int:
        return len(self.classes)

    def counts(self) -> pd.DataFrame:
        """Images per label and split (the ``dataset_counts`` table)."""
        return pd.crosstab(
            pd.Series(self.y, name=self.label_column), pd.Series(self.split, name="split")
        )


def head_images(
    data: Cohort,
    label_column: str,
    split_column: str,
    image_px: int,
    slices_per_volume: int,
    seed: int,
) -> HeadImages:
    """The 2D images of every case (:func:`case_images`) with the case's label and split
    (:func:`case_splits`)."""
    data.label_values(label_column)  # the column exists and no case leaves it blank
    split_of_case = case_splits(data, split_column, label_column, seed)
    images, labels, splits, case_of_image = [], [], [], []
    for i, volume in enumerate(data.volumes()):
        planes = case_images(volume, image_px, slices_per_volume)
        images += planes
        labels += [data.clinical[label_column].iloc[i]] * len(planes)
        splits += [split_of_case[i]] * len(planes)
        case_of_image += [data.case_ids[i]] * len(planes)
    out = HeadImages(
        np.stack(images).astype(np.float32),
        np.asarray(labels).astype(str),
        np.asarray(splits),
        np.asarray(case_of_image),
        label_column,
    )
    if not (out.train.any() and out.test.any()):
        raise ValueError(f"{data.root}: need images in both the train and the test split")
    return out


def _flat(X: np.ndarray) -> np.ndarray:
    return X.reshape(len(X), -1).astype(np.float64)


def pixel_baselines(
    images: HeadImages, embedding_dim: int, dims: Iterable[int], seeds: Sequence[int]
) -> dict[tuple[int, int], dict[str, tuple[np.ndarray, float]]]:
    """The classical baselines and the bounds, ``{(dim, seed): {method: (test labels, test
    MSE)}}`` for the runs of :func:`runs`, each fitted on the training images:

    * ``pca_kmeans`` (every run): k-means (10 restarts) on the first ``dim`` principal
      components of the pixels, the linear counterpart of the ``dim``-d embedding; its MSE is
      that of the PCA reconstruction;
    * at ``embedding_dim`` also ``raw_kmeans`` (k-means on the raw pixels), ``one_cluster``
      (the floor: every image in one cluster; its MSE is that of predicting the mean training
      image, the reconstruction with nothing learnt) and ``true_classes`` (the ceiling: the
      modality itself).
    """
    Xtr, Xte = _flat(images.X_train), _flat(images.X_test)
    y_test = images.y[images.test]
    k, out = images.n_clusters, {}
    pcas = {}
    for d, s in runs(embedding_dim, dims, seeds):
        if d not in pcas:
            pca = PCA(min(d, *Xtr.shape), svd_solver="full").fit(Xtr)
            rec = pca.inverse_transform(pca.transform(Xte))
            pcas[d] = pca, float(((rec - Xte) ** 2).mean())
        pca, pca_mse = pcas[d]
        km = KMeans(k, n_init=10, random_state=s).fit(pca.transform(Xtr))
        row = {"pca_kmeans": (km.predict(pca.transform(Xte)), pca_mse)}
        if d == embedding_dim:
            km = KMeans(k, n_init=10, random_state=s).fit(Xtr)
            row["raw_kmeans"] = (km.predict(Xte), np.nan)
            mean_mse = float(((Xte - Xtr.mean(axis=0)) ** 2).mean())
            row["one_cluster"] = (np.zeros(len(Xte), np.int64), mean_mse)
            row["true_classes"] = (y_test, np.nan)
        out[d, s] = row
    return out


# --------------------------------------------------------------------------- scores (Tables 3.4-3.6)


def score_run(
    images: HeadImages,
    cae: CAEEmbedding,
    heads: Mapping[str, DEC | DCEC],
    embedding_dim: int,
    seed: int,
    baselines: Mapping[str, tuple[np.ndarray, float]],
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """One row per method of one run, scored on the test split: ACC, NMI, the reconstruction
    MSE (CAE, heads with a decoder, the baselines' own), and for the heads ``KL(P || Q)``,
    iterations, epochs and whether ``tol`` stopped them; also the test labels per method.

    "k-means + CAE" is the k-means that initialised the heads (``heads["dec"].init_centers_``)
    applied to the test embedding; its row also says which pretraining step's weights were
    kept. ``baselines`` is one entry of :func:`pixel_baselines`."""
    X_test, y_test = images.X_test, images.y[images.test]
    kmeans_test = pairwise_distances_argmin(cae.transform(X_test), heads["dec"].init_centers_)
    predictions = {
        "kmeans_cae": (kmeans_test, cae.reconstruction_mse(X_test)),
        **{name: (head.predict(X_test), np.nan) for name, head in heads.items()},
        **baselines,
    }
    rows = []
    for name, (pred, mse) in predictions.items():
        row = {
            "embedding_dim": embedding_dim,
            "seed": seed,
            "method": name,
            "acc": cm.cluster_accuracy(y_test, pred),
            "nmi": cm.nmi(y_test, pred),
            "ari": cm.ari(y_test, pred),
            "mse": mse,
            "kl": np.nan,
        }
        if name == "kmeans_cae":
            row["pretrain_steps"] = cae.n_iter_
            row["best_step"] = cae.best_step_
        if name in heads:
            head = heads[name]
            row["kl"] = head.kl_divergence(X_test)
            row["iterations"] = head.n_iter_
            row["epochs"] = head.n_epochs_
            row["converged"] = head.converged_
            if name != "dec":
                row["mse"] = head.reconstruction_mse(X_test)
        rows.append(row)
    return rows, {name: pred for name, (pred, _) in predictions.items()}


def _main_labels(
    labels: Mapping[tuple[str, int, int], np.ndarray], embedding_dim: int
) -> dict[str, list[np.ndarray]]:
    """The test labels of every method at ``embedding_dim``, one array per seed."""
    out: dict[str, list[np.ndarray]] = {}
    for (method, d, _), pred in labels.items():
        if d == embedding_dim:
            out.setdefault(method, []).append(pred)
    return out


def main_scores(
    images: HeadImages,
    labels: Mapping[tuple[str, int, int], np.ndarray],
    embedding_dim: int,
    n_boot: int = N_BOOT,
) -> cmp.MethodScores:
    """ACC, NMI and ARI of every method at ``embedding_dim`` on the test images and on
    ``n_boot`` bootstrap draws of them and of the seeds, the same draws for every method
    (:mod:`medclust.comparison`)."""
    y_test = images.y[images.test]
    scores = cmp.MethodScores(cmp.Resamples(len(y_test), n_boot))
    for method, preds in _main_labels(labels, embedding_dim).items():
        scores.add_partitions(method, y_test, preds)
    return scores


def chance_levels(
    images: HeadImages,
    labels: Mapping[tuple[str, int, int], np.ndarray],
    embedding_dim: int,
    n_perm: int = N_PERM,
) -> dict[str, list[cmp.Chance]]:
    """The permutation chance level of each clustering at ``embedding_dim`` (not the true
    classes): ACC, NMI and ARI with every seed's clusters shuffled over the test images, each
    keeping its own cluster sizes."""
    y_test = images.y[images.test]
    return {
        method: [cmp.chance_level(y_test, preds, s, n_perm=n_perm) for s in cmp.PARTITION_SCORES]
        for method, preds in _main_labels(labels, embedding_dim).items()
        if method != "true_classes"
    }


def main_table(
    results: pd.DataFrame,
    scores: cmp.MethodScores,
    chance: dict[str, list[cmp.Chance]],
    embedding_dim: int,
) -> pd.DataFrame:
    """Tables 3.4 and 3.5 analog at ``embedding_dim``: per method (labelled by :data:`NAMES`)
    the mean and sd over seeds of ACC, NMI, ARI, MSE and KL, the 95 % bootstrap interval of
    ACC, NMI and ARI over the test images and seeds (:func:`main_scores`), and for the heads
    the iterations, epochs and the fraction of seeds that ``tol`` stopped; above them the
    chance level of DEC's clusters (the null's mean and 95 % range)."""
    main = results[results.embedding_dim == embedding_dim]
    table = mean_sd_table(main, "method", ["acc", "nmi", "ari", "mse", "kl"], ORDER)
    summary = scores.summary()
    table = table.join(summary[[c for c in summary.columns if "_ci_" in c]])
    heads = main[main.method.isin(HEADS)].astype({"converged": float}).groupby("method")
    table = table.join(heads[["iterations", "epochs", "converged"]].mean())
    if "dec" in chance:
        table = with_chance_row(table, chance["dec"])[table.columns]
    table.index = [NAMES[m] for m in table.index]
    return table


def differences(scores: cmp.MethodScores) -> list[cmp.Difference]:
    """The paired differences of :data:`COMPARISONS` on ACC and NMI (same test images, draws
    and seeds)."""
    return [
        scores.compare(a, b, score)
        for a, b in COMPARISONS
        if a in scores.methods and b in scores.methods
        for score in ("acc", "nmi")
    ]


def who_wins(
    table: pd.DataFrame, diffs: list[cmp.Difference], chance: dict[str, list[cmp.Chance]]
) -> str:
    """Plain sentences from the paired differences on ACC: is DEC above chance, and better or
    worse than k-means on the pretrained CAE, DCEC and the pixel baselines; is DCEC better
    than k-means + CAE (the thesis: no)?"""
    acc = table["acc_mean"]
    c = next(c for c in chance["dec"] if c.score == "acc")
    on_acc = {(d.a, d.b): d for d in diffs if d.score == "acc"}
    dec = [verdict_clause(d, SHORT) for (a, _), d in on_acc.items() if a == "dec"]
    text = (
        f"DEC clusters the test images with ACC {acc[NAMES['dec']]:.3f} (chance at its cluster "
        f"sizes {c.mean:.3f} [{c.low:.3f}, {c.high:.3f}], permutation p = {c.p_value:.3f}). "
        "Paired on the same test images, bootstrap draws and seeds, DEC " + "; ".join(dec) + "."
    )
    others = [
        f"{SHORT[a]} {verdict_clause(d, SHORT)}" for (a, _), d in on_acc.items() if a != "dec"
    ]
    if others:
        text += " " + "; ".join(others) + "."
    return text + f" Ceiling (the true modality): {acc[NAMES['true_classes']]:.3f}."


def sweep_results(results: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The rows of Table 3.6: the first seed's runs of k-means + CAE, DEC and DCEC."""
    return results[(results.seed == seed) & results.method.isin(SWEEP_METHODS)]


def sweep_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """Table 3.6 analog: one row per embedding dimension and method."""
    return sweep.pivot_table(
        index=["embedding_dim", "method"], values=["acc", "nmi", "mse", "kl"]
    ).reset_index()


def dec_confusion(images: HeadImages, dec_test_labels: np.ndarray) -> pd.DataFrame:
    """Test images per DEC cluster (named after the modality it is matched to) and modality."""
    y_test = images.y[images.test]
    mapping = cm.cluster_mapping(y_test, dec_test_labels)
    return pd.crosstab(
        pd.Series(
            [mapping.get(k, f"cluster {k}") for k in dec_test_labels],
            name="DEC cluster (matched)",
        ),
        pd.Series(y_test, name="true modality"),
    )


def cohort_note(data: Cohort, images: HeadImages) -> str:
    """What was run, from the cohort's own ``dataset.json`` (its name and modality) and the
    split sizes, e.g. ``head_modalities (CT / MR (T1) / PET (FDG) phantom; 694/98/199
    train/val/test images)``."""
    n_train, n_val, n_test = (int(m.sum()) for m in (images.train, images.val, images.test))
    return f"{data.name} ({data.modality}; {n_train}/{n_val}/{n_test} train/val/test images)"


def thesis_comparison(
    results: pd.DataFrame,
    caes: Mapping[tuple[int, int], CAEEmbedding],
    embedding_dim: int,
    seeds: Sequence[int],
    note: str,
    diffs: Sequence[cmp.Difference] = (),
) -> list[dict]:
    """The thesis' test ACC / NMI (Tables 3.4-3.6) and pretraining MSE beside this run's (mean
    +- sd over seeds at ``embedding_dim``, the first seed at the other dimensions), the rows
    the thesis does not have (IDEC, the pixel baselines), the MSE a reconstruction gets with
    nothing learnt (the mean image) and with a linear code (PCA), and the thesis' comparisons
    (DEC - k-means + CAE, DCEC - k-means + CAE, DEC - DCEC at dimension 3) beside this run's
    paired differences and verdicts. ``note`` describes the cohort (:func:`cohort_note`)."""
    where = f"{note}; test split; mean ± sd over {len(seeds)} seeds at dim {embedding_dim}"
    rows = []
    for (method, d), (acc_paper, nmi_paper) in THESIS.items():
        sel = results[(results.method == method) & (results.embedding_dim == d)]
        if len(sel):
            rows.append({
                "quantity": f"{NAMES[method]} ACC / NMI, dim {d}",
                "paper": f"{acc_paper} / {nmi_paper}",
                "this_run": f"{mean_sd(sel.acc)} / {mean_sd(sel.nmi)}",
                "note": where if d == embedding_dim else f"{note}; test split; first seed",
            })  # fmt: skip
    main = results[results.embedding_dim == embedding_dim]
    for method in ("idec", "pca_kmeans", "raw_kmeans"):
        sel = main[main.method == method]
        rows.append({
            "quantity": f"{NAMES[method]} ACC / NMI, dim {embedding_dim}",
            "paper": "",
            "this_run": f"{mean_sd(sel.acc)} / {mean_sd(sel.nmi)}",
            "note": f"not in the thesis; {where}",
        })  # fmt: skip
    for d in diffs:
        pair = ((d.a, embedding_dim), (d.b, embedding_dim))
        if d.score != "acc" or not all(k in THESIS for k in pair):
            continue
        rows.append({
            "quantity": f"{NAMES[d.a]} − {NAMES[d.b]}: ACC, dim {embedding_dim}",
            "paper": f"{THESIS[pair[0]][0] - THESIS[pair[1]][0]:+.3f}",
            "this_run": f"{d.as_text()}: {d.verdict}",
            "note": f"{note}; paired on the same test images, draws and seeds; won "
            f"{d.runs_won} of {d.runs} seeds",
        })  # fmt: skip
    val_mse = [caes[embedding_dim, s].best_val_mse_ for s in seeds]
    val_mse = [v for v in val_mse if np.isfinite(v)]
    context = {m: main[main.method == m].mse.mean() for m in ("one_cluster", "pca_kmeans")}
    rows.append({
        "quantity": f"pretraining MSE, dim {embedding_dim} (validation, best epoch)",
        "paper": THESIS_PRETRAIN_MSE,
        "this_run": mean_sd(val_mse) if val_mse else "",
        "note": (
            f"{note}; on its test images the mean image gives {context['one_cluster']:.4f} and "
            f"PCA-{embedding_dim} {context['pca_kmeans']:.4f}; depends on the intensity "
            "normalisation, which the thesis does not specify"
        ),
    })  # fmt: skip
    return rows


def study_metrics(
    results: pd.DataFrame,
    table: pd.DataFrame,
    chance: dict[str, list[cmp.Chance]],
    diffs: Sequence[cmp.Difference],
    images: HeadImages,
    embedding_dim: int,
    dims: Iterable[int],
    seed: int,
    n_seeds: int,
    runtime_s: float,
) -> dict:
    """``metrics_all.json``: test ACC / NMI / ARI (mean over seeds), ACC sd and the bootstrap
    intervals of every method at ``embedding_dim`` (``table``: :func:`main_table`), the chance
    levels and the paired differences (their verdicts are in ``tables/differences``), the
    sweep (first seed), reconstruction MSE and KL, convergence and pretraining, the split
    sizes."""
    main = results[results.embedding_dim == embedding_dim]
    sweep = sweep_results(results, seed)
    heads = results[results.method.isin(HEADS)]

    def mean_of(method: str, metric: str) -> float:
        return float(main[main.method == method][metric].mean())

    def sweep_of(d: int, method: str, metric: str) -> float:
        return float(sweep[(sweep.embedding_dim == d) & (sweep.method == method)][metric].mean())

    def ci(method: str, metric: str) -> list[float]:
        row = table.loc[NAMES[method]]
        return [float(row[f"{metric}_ci_low"]), float(row[f"{metric}_ci_high"])]

    cae_rows = results[results.method == "kmeans_cae"]
    return {
        "acc": {m: mean_of(m, "acc") for m in ORDER},
        "nmi": {m: mean_of(m, "nmi") for m in ORDER},
        "acc_sd": {m: sd_or_zero(main[main.method == m].acc) for m in ORDER},
        "acc_ci95": {m: ci(m, "acc") for m in ORDER},
        "nmi_ci95": {m: ci(m, "nmi") for m in ORDER},
        "ari": {m: mean_of(m, "ari") for m in ORDER},
        **{
            f"{score}_chance": {
                m: next(c.mean for c in cs if c.score == score) for m, cs in chance.items()
            }
            for score in cmp.PARTITION_SCORES
        },
        "acc_chance_p": {
            m: next(c.p_value for c in cs if c.score == "acc") for m, cs in chance.items()
        },
        "difference": {
            f"{d.score}_{d.a}_vs_{d.b}": {"diff": d.diff, "ci": [d.low, d.high]} for d in diffs
        },
        "sweep": {
            str(d): {
                m: {"acc": sweep_of(d, m, "acc"), "nmi": sweep_of(d, m, "nmi")}
                for m in SWEEP_METHODS
            }
            for d in dims
        },
        "recon_mse": {
            "cae": mean_of("kmeans_cae", "mse"),
            "dcec": mean_of("dcec", "mse"),
            "mean_image": mean_of("one_cluster", "mse"),
            "pca": mean_of("pca_kmeans", "mse"),
        },
        "kl": {m: mean_of(m, "kl") for m in HEADS},
        "converged_fraction": float(heads.converged.astype(float).mean()),
        "n_heads": len(heads),
        "head_epochs": {m: mean_of(m, "epochs") for m in HEADS},
        "pretrain": {
            "steps": int(cae_rows.pretrain_steps.max()),
            "best_step_mean": float(cae_rows.best_step.mean()),
        },
        "n_train": int(images.train.sum()),
        "n_val": int(images.val.sum()),
        "n_test": int(images.test.sum()),
        "n_seeds": n_seeds,
        "runtime_s": runtime_s,
    }


# --------------------------------------------------------------------------- figures


def plot_pretraining(
    caes: Mapping[tuple[int, int], CAEEmbedding], embedding_dim: int, seed: int
) -> plt.Figure:
    """Fig. 3.4 analog: training and validation MSE against the optimiser step for every
    seed's CAE at ``embedding_dim`` (log scale), the kept (best-validation) step marked."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for (d, s), cae in caes.items():
        if d == embedding_dim:
            first = s == seed
            steps = cae.history_["step"]
            ax.plot(steps, cae.history_["train"], color="tab:blue", alpha=0.7,
                    label="train" if first else None)  # fmt: skip
            if cae.history_["val"]:
                ax.plot(steps, cae.history_["val"], color="tab:orange", alpha=0.7,
                        label="validation" if first else None)  # fmt: skip
                ax.axvline(cae.best_step_, color="grey", ls=":", lw=1,
                           label="kept weights" if first else None)  # fmt: skip
    ax.set(
        yscale="log",
        xlabel="optimiser step",
        ylabel="MSE per pixel",
        title=f"CAE pretraining, embedding {embedding_dim} (Fig. 3.4 analog)",
    )
    ax.legend(fontsize=8)
    return fig


def plot_embedding_sweep(sweep: pd.DataFrame, dims: Sequence[int]) -> plt.Figure:
    """Figs. 3.9-3.10 analog: test ACC and NMI against the embedding dimension (log axis, only
    the swept dimensions labelled), one legend beside the panels."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.2), layout="constrained")
    for ax, metric in zip(axes, ["acc", "nmi"], strict=True):
        sweep_named = sweep.assign(method=sweep.method.map(NAMES))
        sns.lineplot(sweep_named, x="embedding_dim", y=metric, hue="method", marker="o", ax=ax,
                     legend=ax is axes[-1])  # fmt: skip
        ax.set(xscale="log", ylim=(0, 1.02),
               title=f"test {metric.upper()} vs embedding dimension")  # fmt: skip
        ax.xaxis.set_major_locator(FixedLocator(list(dims)))
        ax.xaxis.set_major_formatter(FixedFormatter([str(d) for d in dims]))
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    return fig


def plot_reconstructions(images: HeadImages, cae: CAEEmbedding, dcec: DCEC) -> plt.Figure:
    """Figs. 3.5 and 3.8 analog: two test images per class, their reconstructions by the
    pretrained CAE and by the CAE fine-tuned by DCEC."""
    X, y = images.X, images.y
    pick = np.concatenate([np.flatnonzero(images.test & (y == c))[:2] for c in images.classes])
    rec_cae, rec_dcec = cae.reconstruct(X[pick]), dcec.reconstruct(X[pick])
    fig, axes = plt.subplots(3, len(pick), figsize=(1.7 * len(pick), 5.4))
    for j, i in enumerate(pick):
        rows = [(X[i], y[i]), (rec_cae[j].squeeze(), "CAE"), (rec_dcec[j].squeeze(), "DCEC")]
        for row, (img, title) in enumerate(rows):
            axes[row, j].imshow(img.T, cmap="gray", vmin=0, vmax=1)
            axes[row, j].set_title(title, fontsize=8)
            axes[row, j].set_axis_off()
    return fig


def plot_projections(
    images: HeadImages, cae: CAEEmbedding, dec: DEC, dcec: DCEC, seed: int
) -> plt.Figure:
    """Figs. 3.6 and 3.7 analog: t-SNE (top) and UMAP (bottom) of the test embeddings with the
    cluster centres and their Voronoi cells, before fine-tuning (the pretrained CAE with the
    k-means centres) and after (DEC, DCEC); points coloured by the true modality."""
    X_test, y_test = images.X[images.test], images.y[images.test]
    states = {
        "pretrained CAE + k-means": (cae.transform(X_test), dec.init_centers_),
        "DEC": (dec.transform(X_test), dec.cluster_centers_),
        "DCEC": (dcec.transform(X_test), dcec.cluster_centers_),
    }
    n_points = len(X_test) + images.n_clusters
    # the defaults, capped for small cohorts
    perplexity, neighbours = min(30.0, (n_points - 1) / 3), min(15, n_points - 1)
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
    for j, (title, (Z, centres)) in enumerate(states.items()):
        tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
        umap = UMAP(n_components=2, n_neighbors=neighbours, random_state=seed, n_jobs=1)
        for ax, projector, name in [(axes[0, j], tsne, "t-SNE"), (axes[1, j], umap, "UMAP")]:
            voronoi_projection(
                ax, Z, centres, projector, y_test, images.classes, f"{name}: {title}"
            )
    axes[0, 0].legend(fontsize=7, markerscale=2)
    return fig
