"""The engine stays free of Qt and napari, so the CLI, the API and the widgets share it (and it runs on servers)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import napari_spotdetect.core as core

FORBIDDEN = ("napari", "magicgui", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy", "superqt")

CHECK = f"""
import importlib, pkgutil, sys
import napari_spotdetect.core as core
for m in pkgutil.walk_packages(core.__path__, core.__name__ + "."):
    importlib.import_module(m.name)
import napari_spotdetect.cli
bad = sorted({{name.split(".")[0] for name in sys.modules}} & set({FORBIDDEN!r}))
print(",".join(bad))
"""


def test_core_and_cli_import_neither_qt_nor_napari():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"the engine imported {out.stdout.strip()}"


# ---------------------------------------------------------------------------------------------------------
# what napari and the shell touch first stays light: no torch until a model is needed
# ---------------------------------------------------------------------------------------------------------
LIGHT = """
import sys
import napari_spotdetect, napari_spotdetect._reader, napari_spotdetect._writer, napari_spotdetect._sample_data
from npe2 import PluginManifest
from napari_spotdetect import cli
manifest = PluginManifest.from_file(napari_spotdetect.__path__[0] + "/napari.yaml")
reader = napari_spotdetect._reader.get_reader("spots.csv")
try:
    cli.main(["--help"])
except SystemExit:
    pass
for sub in ("predict", "evaluate", "train", "finetune", "models"):
    try:
        cli.main([sub, "--help"])
    except SystemExit:
        pass
print("TORCH" if "torch" in sys.modules else "LIGHT")
"""


def test_package_root_reader_writer_manifest_and_cli_help_do_not_import_torch():
    out = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "LIGHT", "importing the reader / writer / CLI help loaded torch"


def test_the_public_names_still_load_on_first_use():
    import napari_spotdetect as sd

    assert callable(sd.detect) and sd.detect is core.detection.detect.detect
    assert set(sd.__all__) <= set(dir(sd))
    for name in core.__all__:
        assert getattr(core, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = sd.nothing_here
    # an old flat module name is an error, never something else (``from __future__ import annotations`` would be)
    with pytest.raises(ImportError):
        from napari_spotdetect.core import annotations  # noqa: F401


# ---------------------------------------------------------------------------------------------------------
# the import graph: no circles, core free of the GUI, core's sub-packages in one order
# ---------------------------------------------------------------------------------------------------------
SRC = Path(__file__).resolve().parents[1] / "src"
#: core's parts from the bottom up: a part may import itself and the parts before it (one set = peers)
ORDER = [{"errors"}, {"common"}, {"io"}, {"models", "weights"}, {"detection"}, {"groundtruth"}, {"analysis"},
         {"training"}]
GUI = ("napari", "magicgui", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy", "superqt")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]):
    """(imported module, at module level?) for every import in the file; ``if TYPE_CHECKING:`` blocks skipped."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in modules]
        else:
            continue
        for target in targets:
            yield target, id(node) in top


def _graph():
    files = sorted((SRC / "napari_spotdetect").rglob("*.py"))
    modules = {_module_name(f) for f in files}
    return {_module_name(f): list(_imports(f, modules)) for f in files}, modules


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if parts[:2] == ["napari_spotdetect", "core"] and len(parts) > 2 else None


def test_no_import_circles_among_package_modules():
    graph, modules = _graph()
    edges = {m: sorted({t for t, top in imports if top and t in modules and t != m}) for m, imports in graph.items()}
    state, stack, circles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in edges[m]:
            if state.get(t) == "open":
                circles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not circles, "module-level import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_core_never_imports_the_gui_or_the_faces():
    graph, _ = _graph()
    bad = [(m, t) for m, imports in graph.items() if m.startswith("napari_spotdetect.core") for t, _ in imports
           if t.split(".")[0] in GUI or t.startswith(("napari_spotdetect.widgets", "napari_spotdetect.cli",
                                                       "napari_spotdetect._"))]
    assert not bad, bad


def test_core_parts_import_only_parts_below_them():
    graph, _ = _graph()
    rank = {part: i for i, parts in enumerate(ORDER) for part in parts}
    found = {_part(m) for m in graph} - {None}
    assert found <= set(rank), f"a new part of core needs its place in ORDER: {found - set(rank)}"
    bad = [(m, t) for m, imports in graph.items() if _part(m) for t, _ in imports
           if _part(t) and rank[_part(t)] > rank[_part(m)]]
    assert not bad, "imports against the order of core's parts: " + ", ".join(f"{m} -> {t}" for m, t in bad)


def test_one_rank_to_axes_table():
    """What an array of each rank holds is said once (``common.validate.RANK_AXES``): no slicing of axis strings
    by rank (``"zyx"[-ndim:]``) or second table elsewhere, which drifted apart four times before."""
    table = re.compile(r"""["'][tczyx]{2,5}["']\s*\[\s*-|\{\s*2\s*:\s*["']yx["']""")
    found = [f"{p.relative_to(SRC)}:{i}" for p in sorted((SRC / "napari_spotdetect").rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if table.search(line) and not p.name == "validate.py"]
    assert not found, found
