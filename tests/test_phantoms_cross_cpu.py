"""Phantom cohorts are the same bytes whatever kernels the CPU selects.

A small cohort of every generator is built in a fresh interpreter under each OpenBLAS kernel
family (``OPENBLAS_CORETYPE``), with numpy's AVX-512 paths switched off
(``NPY_DISABLE_CPU_FEATURES``), and with glibc's FMA/AVX2 variants of ``exp``/``sin``/... off
(``GLIBC_TUNABLES``), and every file must have the same MD5 as under the machine's own choice.
A static check keeps BLAS/LAPACK calls out of the generators (the cause of the one mismatch
ever seen: ``head_modalities`` on another CPU).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

PHANTOMS = ROOT / "lib" / "medclust_phantoms"

SMALL = {
    "liver_mri": {"n_cases": 3, "shape": [80, 64, 6]},
    "lung_microct": {"n_specimens": 1, "size": 40},
    "emphysema_ct": {"n_train": 3, "n_test": 2, "shape": [32, 32, 32]},
    "head_modalities": {"counts": [4, 4, 4], "size": 64},
    "routine_ct": {"n_cases": 4, "shape": [32, 32, 28], "spacing": [11.25, 11.25, 11.4]},
    "routine_ct_atlas": {"n_templates": 2, "shape": [32, 32, 28], "spacing": [11.25, 11.25, 11.4]},
}

BUILD = """
import json, sys
from pathlib import Path
from medclust_phantoms import available, build
from medclust_phantoms.manifest import digests
small, out = json.loads(sys.argv[1]), Path(sys.argv[2])
assert sorted(small) == available(), "add the new generator to SMALL"
for name, params in small.items():
    build(name, out, **params)
json.dump(digests(out), sys.stdout)
"""

# the numpy 2.x names of the AVX-512 feature groups (unknown names are ignored by numpy)
NO_AVX512 = "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512_SKX"
SETTINGS = {
    **{
        f"OPENBLAS_CORETYPE={k}": {"OPENBLAS_CORETYPE": k}
        for k in ("Prescott", "Sandybridge", "Haswell", "SkylakeX", "Zen")
    },
    "numpy without AVX-512": {"NPY_DISABLE_CPU_FEATURES": NO_AVX512},
    "glibc libm without FMA/AVX2": {"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F"},
}


def _build(tmp_path, label: str, extra_env: dict[str, str]) -> dict[str, str]:
    # the reference is the machine's own choice: drop the Makefile's numpy pin
    env = {k: v for k, v in os.environ.items() if k not in ("NPY_DISABLE_CPU_FEATURES",)}
    env.update(extra_env)
    out = tmp_path / label.replace(" ", "_").replace("/", "_").replace("=", "_") / "data"
    done = subprocess.run(
        [sys.executable, "-c", BUILD, json.dumps(SMALL), str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, f"{label}: generation failed\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("reference"), "machine default", {})


@pytest.mark.slow
@pytest.mark.parametrize("label", sorted(SETTINGS))
def test_phantoms_identical_under_other_cpu_kernels(label, reference, tmp_path):
    from medclust_phantoms.manifest import describe, differences

    got = _build(tmp_path, label, SETTINGS[label])
    assert len(reference) > 50
    diffs = differences(reference, got)
    assert not diffs, f"{label}: cohorts differ from the machine default:\n{describe(diffs)}"


BLAS_CALLS = {"dot", "vdot", "inner", "matmul", "tensordot", "einsum", "kron", "outer"}


def _blas_uses(path) -> list[str]:
    """``a @ b``, ``np.dot``/``np.matmul``/..., ``x.dot(...)`` and any ``np.linalg``/
    ``scipy.linalg`` use in a module."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(PHANTOMS)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.BinOp | ast.AugAssign) and isinstance(node.op, ast.MatMult):
            found.append(f"{where} uses '@'")
        elif isinstance(node, ast.Attribute):
            if node.attr == "linalg":
                found.append(f"{where} uses linalg")
            elif node.attr in BLAS_CALLS and isinstance(node.value, ast.Name | ast.Attribute):
                found.append(f"{where} calls .{node.attr}")
    return found


def test_generators_call_no_blas():
    """Generators use :mod:`medclust_phantoms.exact` instead (fixed-order element-wise sums)."""
    modules = [p for p in sorted(PHANTOMS.rglob("*.py")) if p.name != "exact.py"]
    assert len(modules) >= 12  # the routine_ct subpackage included
    uses = [u for p in modules for u in _blas_uses(p)]
    assert not uses, "BLAS/LAPACK in a phantom generator (use medclust_phantoms.exact):\n" + (
        "\n".join(uses)
    )
