# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The connector's import graph has no circle: no module imports a module that imports it back.

Every relative import counts: at the top, inside a function (imported when used) and under ``TYPE_CHECKING``. A
circle means two files that cannot be read, changed or tested one without the other.
"""

import ast
import pathlib

import pytest

CONNECTOR = pathlib.Path(__file__).resolve().parents[5] / "plugins" / "module_utils" / "connector"


def imports_of(source: str) -> set:
    """The connector modules a file imports (``from . import a, b``, ``from .a import x``), wherever they are."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def graph(directory: pathlib.Path) -> dict:
    return {path.stem: imports_of(path.read_text()) for path in sorted(directory.glob("*.py"))}


def find_cycle(edges: dict):
    """A list of modules that import each other in a circle, or None."""
    state = {}
    stack = []

    def visit(name):
        state[name] = "open"
        stack.append(name)
        for other in sorted(edges.get(name, ())):
            if state.get(other) == "open":
                return stack[stack.index(other):] + [other]
            if other not in state:
                found = visit(other)
                if found:
                    return found
        stack.pop()
        state[name] = "done"
        return None

    for name in sorted(edges):
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


@pytest.mark.parametrize("edges, cycle", [
    ({"a": {"b"}, "b": set()}, None),
    ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"a"}}, ["a", "a"]),
], ids=["line", "pair", "triangle", "self"])
def test_find_cycle_table(edges, cycle):
    assert find_cycle(edges) == cycle


def test_imports_of_sees_every_form():
    source = ("from . import scsi, validate\nfrom .errors import X\nimport os\n"
              "if TYPE_CHECKING:\n    from .iscsi import Path\n"
              "def f():\n    from .detach import Detacher\n")
    assert imports_of(source) == {"scsi", "validate", "errors", "iscsi", "detach"}


def test_connector_import_graph_has_no_circle():
    edges = graph(CONNECTOR)
    assert "volume" in edges and "iscsi" in edges
    assert find_cycle(edges) is None, "connector modules import each other: %s" % " -> ".join(find_cycle(edges))


def test_volume_is_at_the_bottom():
    """volume.py (Path, which sessions and devices are a path's) imports only the sysfs reader (and, for type
    checking, the file-system layer and the input checks), none of which imports anything above it."""
    edges = graph(CONNECTOR)
    assert edges["volume"] <= {"scsi", "hostfs", "validate"}
    assert not (edges["scsi"] | edges["hostfs"] | edges["validate"]) & {"volume", "iscsi", "attach", "detach"}
    assert not [name for name, imported in edges.items() if "iscsi" in imported], \
        "nothing in the connector imports iscsi.py (the entry point)"
