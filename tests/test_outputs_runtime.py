"""medclust.outputs (atomic report files) and medclust.runtime (seeding, device)."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from medclust.outputs import Report, atomic_write_text, to_jsonable
from medclust.runtime import seed_everything, select_device, sub_seed, timed
from medclust.summary import build_index


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


def test_sub_seed_streams():
    assert sub_seed(7) == sub_seed(7, 0) == 7  # the main stream is the seed itself
    assert isinstance(sub_seed(7, 0), int) and isinstance(sub_seed(7, 1), int)
    # a second stream of seed 0 is not the main stream of seed 1 (as seed + offset was)
    assert sub_seed(0, 1) != 1 and sub_seed(0, 1) != sub_seed(1, 0)
    streams = {sub_seed(s, o) for s in range(4) for o in range(1, 4)}
    assert len(streams) == 12 and not streams & set(range(4))
    assert all(0 <= v < 2**32 for v in streams)  # torch, NumPy and scikit-learn take it
    assert sub_seed(3, 2) == sub_seed(3, 2)  # deterministic
    assert sub_seed(3, 2) == int(np.random.SeedSequence([3, 2]).generate_state(1)[0])
    assert sub_seed(np.int64(3), 2) == sub_seed(3, 2)


def test_report_verdict_appends_paragraphs(tmp_path):
    report = Report(tmp_path)
    assert report.verdict("  A is better than B.\n") == "  A is better than B.\n"
    path = tmp_path / "tables" / "verdict.md"
    assert path.read_text() == "A is better than B.\n"
    report.verdict("C cannot be told apart from D.")
    assert path.read_text() == "A is better than B.\n\nC cannot be told apart from D.\n"
    # a new report of the same folder starts the verdict afresh
    Report(tmp_path).verdict("Only this.")
    assert path.read_text() == "Only this.\n"


def _study_folder(reports, name: str, verdict: str | None):
    report = Report(reports / name)
    report.metrics({"acc": 0.5})
    report.table(pd.DataFrame({"a": [1.0]}), "table1")
    report.paper_comparison([{"quantity": "acc", "paper": 0.7, "this_run": 0.5, "note": ""}])
    if verdict is not None:
        report.verdict(verdict)
    return report


def test_summary_puts_the_verdict_under_the_study_heading(tmp_path):
    reports, notebooks = tmp_path / "reports", tmp_path / "notebooks"
    notebooks.mkdir()
    notebook = {"cells": [{"cell_type": "markdown", "source": ["# Study one\n", "text"]}]}
    (notebooks / "01_one.ipynb").write_text(json.dumps(notebook))
    _study_folder(reports, "01_one", "A is better than B.").verdict("Second paragraph.")
    _study_folder(reports, "02_two", None)
    index = build_index(reports, notebooks)
    one, two = index.split("## Study one\n")[1].split("## 02_two\n")
    # the verdict right under the heading, before the notebook line and the tables
    assert one.startswith(
        "\n**Verdict.** A is better than B.\n\nSecond paragraph.\n\nNotebook: "
        "`notebooks/01_one.ipynb`\n"
    )
    assert one.index("**Verdict.**") < one.index("| quantity")
    # the verdict is not listed among the tables; the other tables are
    tables = one.split("Tables: ")[1]
    assert "verdict" not in tables and "[table1](01_one/tables/table1.md)" in tables
    assert "[paper_comparison](01_one/tables/paper_comparison.md)" in tables
    # a study without a verdict: no verdict line
    assert "**Verdict.**" not in two and two.startswith("\nNotebook: `notebooks/02_two.ipynb`")
