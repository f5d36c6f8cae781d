"""Build ``reports/README.md`` from every study's report folder (the ``summary`` stage).

For each ``reports/<notebook>/`` that holds a ``metrics.json``: the notebook's title (first
Markdown heading of ``notebooks/<notebook>.ipynb``), its verdict sentence
(``tables/verdict.md``, :meth:`medclust.outputs.Report.verdict`: the answer before the
tables), its paper-vs-this-run table (``tables/paper_comparison.csv``, written by
:meth:`medclust.outputs.Report.paper_comparison`) and links to its figures and tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from medclust.outputs import PAPER_COMPARISON, VERDICT, atomic_write_text

HEADER = """# Reports

Written by the `summary` stage of `dvc.yaml` from each study's `metrics.json` and
`tables/paper_comparison.csv`; do not edit by hand. Every number below comes from the run
recorded in `dvc.lock`. Regenerate everything with `make repro` (or `dvc repro`).
"""


def notebook_title(notebook: Path) -> str:
    if notebook.is_file():
        nb = json.loads(notebook.read_text(encoding="utf-8"))
        for cell in nb.get("cells", []):
            if cell.get("cell_type") == "markdown":
                for line in "".join(cell.get("source", "")).splitlines():
                    if line.startswith("#"):
                        return line.lstrip("#").strip()
    return notebook.stem


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def study_section(folder: Path, notebooks_dir: Path) -> str:
    title = notebook_title(notebooks_dir / f"{folder.name}.ipynb")
    lines = [f"## {title}", ""]
    verdict = folder / "tables" / f"{VERDICT}.md"
    if verdict.is_file():
        lines += ["**Verdict.** " + verdict.read_text(encoding="utf-8").strip(), ""]
    lines += [f"Notebook: `notebooks/{folder.name}.ipynb`", ""]
    table = folder / "tables" / f"{PAPER_COMPARISON}.csv"
    if table.is_file():
        df = pd.read_csv(table, keep_default_na=False)
        lines += [df.to_markdown(index=False), ""]
    else:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        flat = pd.json_normalize(metrics, sep=".").T.reset_index()
        flat.columns = ["metric", "this_run"]
        lines += [flat.to_markdown(index=False), ""]
    figures = sorted((folder / "figures").glob("*.png"))
    if figures:
        lines.append(
            "Figures: " + ", ".join(f"[{f.stem}]({f.relative_to(folder.parent)})" for f in figures)
        )
    tables = sorted(t for t in (folder / "tables").glob("*.md") if t.stem != VERDICT)
    if tables:
        lines.append("")
        lines.append(
            "Tables: " + ", ".join(f"[{t.stem}]({t.relative_to(folder.parent)})" for t in tables)
        )
    return "\n".join(lines) + "\n"


def build_index(reports_dir: str | Path, notebooks_dir: str | Path = "notebooks") -> str:
    reports_dir, notebooks_dir = Path(reports_dir), Path(notebooks_dir)
    # a study's report folder, not the scratch folder of a running or failed run
    folders = sorted(
        p.parent
        for p in reports_dir.glob("*/metrics.json")
        if not p.parent.name.endswith((".partial", ".old"))
    )
    sections = [study_section(f, notebooks_dir) for f in folders]
    return HEADER + "\n" + "\n".join(sections)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m medclust.summary", description="Write reports/README.md"
    )
    parser.add_argument("--reports", default="reports")
    parser.add_argument("--notebooks", default="notebooks")
    args = parser.parse_args(argv)
    atomic_write_text(Path(args.reports) / "README.md", build_index(args.reports, args.notebooks))


if __name__ == "__main__":
    main()
