"""medclust.outputs (atomic report files) and medclust.runtime (seeding, device)."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from medclust.outputs import Report, atomic_write_text, to_jsonable
from medclust.runtime import seed_everything, select_device, timed


def test_metrics_json_plain_types(tmp_path):
    report = Report(tmp_path / "r")
    path = report.metrics(
        {
            "acc": np.float32(0.5),
            "n": np.int64(3),
            "bad": float("nan"),
            "nested": {"k": [np.float64(1 / 3), 2]},
            "ok": np.bool_(True),
        }
    )
    data = json.loads(path.read_text())
    assert data == {"acc": 0.5, "n": 3, "bad": None, "nested": {"k": [0.333333, 2]}, "ok": True}


def test_unserialisable_metric_names_the_value():
    with pytest.raises(TypeError, match="cannot write object"):
        to_jsonable({"x": object()})


def test_table_and_figure_files(tmp_path):
    report = Report(tmp_path)
    report.table(pd.DataFrame({"a": [1.0, 2.0]}), "t")
    assert (tmp_path / "tables" / "t.csv").read_text() == "a\n1.0\n2.0\n"
    assert (tmp_path / "tables" / "t.md").read_text().splitlines()[2] == "| 1.000 |"
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    png = report.figure(fig, "f")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.rglob("*.tmp"))


def test_figures_are_byte_identical_on_rerun(tmp_path):
    def draw(name):
        fig, ax = plt.subplots()
        ax.imshow(np.arange(16).reshape(4, 4))
        return Report(tmp_path).figure(fig, name).read_bytes()

    assert draw("a") == draw("b")


def test_paper_comparison_needs_its_columns(tmp_path):
    with pytest.raises(ValueError, match="note"):
        Report(tmp_path).paper_comparison([{"quantity": "acc", "paper": 0.7, "this_run": 0.6}])


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = atomic_write_text(tmp_path / "m.json", "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_seed_everything_makes_torch_and_numpy_repeat():
    rng = seed_everything(7)
    a = (rng.random(3), torch.rand(3), np.random.rand(2))  # noqa: NPY002 (legacy global seeding is what is tested)
    rng = seed_everything(7)
    b = (rng.random(3), torch.rand(3), np.random.rand(2))  # noqa: NPY002 (legacy global seeding is what is tested)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_seed_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        seed_everything(bad)


def test_select_device():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="invalid device 'tpu'"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            select_device("cuda")


def test_timed_accumulates():
    results = {}
    with timed(results):
        pass
    with timed(results):
        pass
    assert results["runtime_s"] >= 0
