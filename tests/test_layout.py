"""The package layout the pipeline relies on: the studies' library (``lib/medclust``, the code
every DVC study stage depends on) never imports the phantom generators (``medclust_phantoms``),
so editing a generator changes ``data.dvc`` and not every study's code hash."""

from __future__ import annotations

import ast

from conftest import ROOT

LIB = ROOT / "lib" / "medclust"


def _imported_modules(path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in a file, function-level and relative ones included
    (a relative import is resolved against the file's package)."""
    package = path.relative_to(LIB.parent).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def test_import_scan_sees_imports():
    """The scan itself: it finds a known import of the library."""
    found = {name for _, name in _imported_modules(LIB / "studies" / "common.py")}
    assert "medclust.validation.check_int" in found


def test_medclust_never_imports_the_phantom_generators():
    modules = sorted(LIB.rglob("*.py"))
    assert len(modules) > 20
    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in modules
        for line, name in _imported_modules(path)
        if name == "medclust_phantoms" or name.startswith("medclust_phantoms.")
    ]
    assert not offending, "lib/medclust must not import medclust_phantoms:\n" + "\n".join(offending)
