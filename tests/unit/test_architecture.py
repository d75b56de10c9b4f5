"""The floors of docs/architecture.md, as pyproject.toml's import contract states them: every module
is placed on a floor, the document names the same floors, and an ignored import says why.
(`lint-imports` checks the imports themselves; these tests check that the contract covers
everything and that the map of the code stays true.)"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("calico_cni", "calico_ipam")


def contract() -> dict:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (floors,) = [c for c in config["contracts"] if c["id"] == "floors"]
    return floors


def layer_entries() -> list[str]:
    """Every module named by a layer of the floors contract."""
    return [name.strip() for layer in contract()["layers"] for name in re.split(r"[|:]", layer)]


def modules() -> dict[str, Path]:
    """Every module of the product, by dotted name (a package by its own name)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def placed(module: str, entries: list[str]) -> bool:
    return any(module == e or module.startswith(e + ".") for e in entries)


def test_every_module_is_on_a_floor():
    """A new module fails here until the contract (and docs/architecture.md) places it."""
    entries = layer_entries()
    missing = []
    for name, path in modules().items():
        if placed(name, entries):
            continue
        # A package split over several floors is only a namespace: its __init__ imports nothing.
        if path.name == "__init__.py" and any(e.startswith(name + ".") for e in entries):
            tree = ast.parse(path.read_text())
            assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")], f"{path} imports: a package split over floors must not"
            continue
        missing.append(name)
    assert not missing, f"not on any floor of pyproject.toml's contract: {missing}"


def test_every_floor_names_modules_that_exist():
    names = modules()
    assert [e for e in layer_entries() if e not in names] == []


def test_architecture_document_names_every_floor_entry():
    """docs/architecture.md is the map: it names every module or package the contract places."""
    text = (REPO / "docs" / "architecture.md").read_text()
    assert [e for e in layer_entries() if f"`{e}`" not in text] == []


def test_ignored_imports_say_why():
    """An import the contract ignores carries a comment (on its line or the line before)."""
    lines = (REPO / "pyproject.toml").read_text().splitlines()
    inside, previous, bare = False, "", []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("ignore_imports"):
            inside = True
        elif inside and stripped.startswith("]"):
            inside = False
        elif inside and stripped.startswith('"') and "#" not in line and not previous.startswith("#"):
            bare.append(stripped)
        previous = stripped
    assert not bare, f"ignored imports without a reason: {bare}"


@pytest.mark.parametrize("module", ["calico_cni.protocol", "calico_cni.model", "calico_cni.errors", "calico_cni.timing", "calico_cni.logs"])
def test_the_bottom_floors_import_nothing_of_ours_above_them(module):
    """The wire format, the model and the base import only the standard library and each other
    (what lint-imports cannot say: that they import no third-party package either)."""
    allowed = {"calico_cni.protocol", "calico_cni.model", "calico_cni.errors", "calico_cni.timing", "calico_cni.logs"}
    for name, path in modules().items():
        if not (name == module or name.startswith(module + ".")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for target in targets:
                top = target.split(".")[0]
                if top in PACKAGES:
                    assert any(target == a or target.startswith(a + ".") for a in allowed), f"{name} imports {target}"
                else:
                    assert top in STDLIB, f"{name} imports the third-party {target}"


STDLIB = frozenset(__import__("sys").stdlib_module_names) | {"__future__"}
