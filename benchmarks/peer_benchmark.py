"""Peer validation: this project's DEC, IDEC and DCN beside ClustPy 0.0.3 on the same data.

Data: scikit-learn's bundled digits (1,797 8 x 8 images, 10 classes), z-normalised with one
global mean and sd (:func:`clustpy_peer.load_digits_znorm`, as ClustPy's authors do). Both
sides use the same network and budget: the fully connected ``64-500-500-2000-10``
autoencoder, batches of 256, 100 pretraining and (at most) 150 clustering epochs, seeds 0-2.

* ClustPy (``clustpy_peer.run_clustpy``): its ``DEC``, ``IDEC``, ``DCN`` at their defaults
  (LeakyReLU network, a fresh pretraining per run, fixed epochs, ``labels_`` from a final
  k-means on the embedding; the heads' own labels are scored too).
* Ours: one :class:`~medclust.models.autoencoders.MLPAutoencoder` per seed pretrained by
  :func:`~medclust.models.autoencoders.pretrain` (800 Adam steps = 100 epochs, lr 1e-3), then
  plugged into ``DEC``, ``DCEC(gamma=0.1)`` (IDEC) and ``DCN`` at this project's defaults
  (``update_epochs`` 0.5, ``tol`` 0.001, ``max_epochs`` 150; DCN ``lam`` 0.01, 150 epochs).
  The labels are each head's own (``predict``). A method's seconds include the pretraining it
  uses (shared by the three heads of a seed, so counted in each).

Beside them: k-means on the pixels (ClustPy's baseline, sklearn defaults), the floor (one
cluster) and the ceiling (the true digits), and the numbers the issue reports for ClustPy on
this machine type. ClustPy must be installed first (``make benchmark-env``: ``--no-deps`` into
``build/clustpy``, never a project dependency). Run, with nothing else on the machine::

    .venv/bin/python benchmarks/peer_benchmark.py

Writes ``reports/benchmarks/peer_clustpy.csv`` (one row per run) and ``peer_clustpy.md``.
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clustpy_peer import import_clustpy, load_digits_znorm, run_clustpy  # noqa: E402

from medclust.metrics import cluster_accuracy, nmi  # noqa: E402
from medclust.models import DCEC, DCN, DEC  # noqa: E402
from medclust.models.autoencoders import MLPAutoencoder, pretrain  # noqa: E402
from medclust.outputs import atomic_write_text  # noqa: E402

log = logging.getLogger("peer_benchmark")
ROOT = Path(__file__).resolve().parents[1]
BATCH = 256
#: ClustPy 0.0.3 on digits, seeds 0-2, measured on this machine type (issue #15): ACC mean, sd.
ISSUE_REFERENCE = {"kmeans": (0.792, None), "DEC": (0.743, 0.060), "IDEC": (0.765, 0.062),
                   "DCN": (0.800, 0.069)}  # fmt: skip


def ours(X: np.ndarray, seed: int, pretrain_epochs: int, epochs: int, device: str) -> list[dict]:
    """One pretraining and the three heads of this project for one seed."""
    n_clusters = 10
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ae = MLPAutoencoder((X.shape[1], 500, 500, 2000, 10)).to(device)
    steps = pretrain_epochs * math.ceil(len(X) / BATCH)
    pretrain(ae, X, steps=steps, batch_size=BATCH, lr=1e-3, seed=seed)
    pretrain_s = time.perf_counter() - start
    common = dict(pretrained=ae, n_clusters=n_clusters, batch_size=BATCH, seed=seed, device=device)
    heads = {
        "DEC": DEC(max_epochs=epochs, **common),
        "IDEC": DCEC(gamma=0.1, max_epochs=epochs, **common),
        "DCN": DCN(latent_dim=10, epochs=epochs, **common),
    }
    rows = []
    for name, head in heads.items():
        start = time.perf_counter()
        head.fit(X)
        fit_s = time.perf_counter() - start
        epochs_run = getattr(head, "n_epochs_", epochs)
        rows.append({"implementation": "medclust", "method": name, "labels": "head",
                     "seed": seed, "pred": head.predict(X), "seconds": pretrain_s + fit_s,
                     "clustering_epochs": epochs_run})  # fmt: skip
        log.info("medclust %s seed %d: %.1f s (%.1f pretraining)", name, seed, rows[-1]["seconds"],
                 pretrain_s)  # fmt: skip
    return rows


def clustpy_rows(X, seed: int, pretrain_epochs: int, epochs: int, device: str) -> list[dict]:
    """ClustPy's k-means, DEC, IDEC and DCN for one seed; deep methods scored twice."""
    rows = []
    for method in ("kmeans", "DEC", "IDEC", "DCN"):
        labels, head, seconds = run_clustpy(method, X, 10, seed, pretrain_epochs=pretrain_epochs,
                                            clustering_epochs=epochs, device=device)  # fmt: skip
        base = {"implementation": "clustpy 0.0.3", "method": method, "seed": seed,
                "seconds": seconds, "clustering_epochs": epochs if head is not None else np.nan}  # fmt: skip
        rows.append({**base, "labels": "labels_ (final k-means)" if head is not None else "k-means",
                     "pred": labels})  # fmt: skip
        if head is not None:
            rows.append({**base, "labels": "head", "pred": head})
        log.info("clustpy %s seed %d: %.1f s", method, seed, seconds)
    return rows


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds of ACC, NMI and seconds per implementation, method and labels."""
    keys = ["implementation", "method", "labels"]
    table = runs.groupby(keys, sort=False)[["acc", "nmi", "seconds"]].agg(["mean", "std"])
    table.columns = [f"{a}_{b}" for a, b in table.columns]
    return table.reset_index()


def verdicts(table: pd.DataFrame) -> list[str]:
    """Per method: is ours within or above ClustPy's band (its mean - sd over seeds, scored as
    ClustPy scores itself, ``labels_``), and in no more time?"""
    out = []
    for method in ("DEC", "IDEC", "DCN"):
        mine = table[(table.implementation == "medclust") & (table.method == method)].iloc[0]
        peer = table[(table.implementation != "medclust") & (table.method == method)
                     & (table.labels != "head")].iloc[0]  # fmt: skip
        low = peer.acc_mean - peer.acc_std
        acc_ok = mine.acc_mean >= low
        time_ok = mine.seconds_mean <= peer.seconds_mean
        out.append(
            f"{method}: ours ACC {mine.acc_mean:.3f} ± {mine.acc_std:.3f} vs ClustPy "
            f"{peer.acc_mean:.3f} ± {peer.acc_std:.3f} -> "
            f"{'within or above' if acc_ok else 'below'} ClustPy's band (>= {low:.3f}); "
            f"{mine.seconds_mean:.0f} s vs {peer.seconds_mean:.0f} s -> "
            f"{'no more time' if time_ok else 'slower'}."
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pretrain-epochs", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import_clustpy()  # fail before any training when ClustPy is missing

    Xd, y = load_digits_znorm()
    X = Xd.astype(np.float32)
    rows = []
    for seed in args.seeds:
        rows += ours(X, seed, args.pretrain_epochs, args.epochs, args.device)
        rows += clustpy_rows(Xd, seed, args.pretrain_epochs, args.epochs, args.device)
    for row in rows:
        row["acc"], row["nmi"] = cluster_accuracy(y, row["pred"]), nmi(y, row["pred"])
    runs = pd.DataFrame(rows).drop(columns="pred")
    bounds = pd.DataFrame([
        {"implementation": "-", "method": "one cluster (floor)", "labels": "-",
         "acc_mean": cluster_accuracy(y, np.zeros_like(y)), "nmi_mean": 0.0},
        {"implementation": "-", "method": "true digits (ceiling)", "labels": "-",
         "acc_mean": 1.0, "nmi_mean": 1.0},
    ])  # fmt: skip
    table = pd.concat([summary(runs), bounds], ignore_index=True)
    reference = pd.DataFrame(
        [{"method": m, "acc_mean": a, "acc_std": s} for m, (a, s) in ISSUE_REFERENCE.items()]
    )

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "peer_clustpy.csv", runs.to_csv(index=False))
    import clustpy

    text = [
        "# Peer validation: medclust DEC / IDEC / DCN beside ClustPy 0.0.3",
        "",
        f"Data: scikit-learn digits ({len(y)} images, 64 pixels, 10 classes), global z-score. "
        f"Network 64-500-500-2000-10, batch {BATCH}, {args.pretrain_epochs} pretraining and "
        f"{args.epochs} clustering epochs (ours: at most, `tol` 0.001 may stop earlier), "
        f"seeds {args.seeds}, device {args.device}, {torch.get_num_threads()} torch threads. "
        f"ClustPy {getattr(clustpy, '__version__', '0.0.3')}, torch {torch.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}. Seconds: wall time of the "
        "fit including its pretraining (ours: one pretraining per seed, shared by the three "
        "heads and counted in each). See the docstring of benchmarks/peer_benchmark.py.",
        "",
        "## Who wins",
        "",
        *[f"- {v}" for v in verdicts(table)],
        "",
        "## Mean ± sd over seeds",
        "",
        table.to_markdown(index=False, floatfmt=".3f"),
        "",
        "## ClustPy as reported in the issue (same machine type, seeds 0-2)",
        "",
        reference.to_markdown(index=False, floatfmt=".3f"),
        "",
    ]
    atomic_write_text(args.out / "peer_clustpy.md", "\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
