"""The house rules of the layout, read from the source: the core runs without the tools, model.py needs
only torch, an exception needs no configuration, and no file of the product points outside it."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = sorted(p.name for p in ROOT.glob("*.py"))
TOOLS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tools").glob("*.py"))
LOCAL = {p[:-3] for p in CORE} | {"tools"}


def imports(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("name", CORE)
def test_the_core_never_imports_a_tool(name):
    assert "tools" not in imports(ROOT / name)


def test_model_py_needs_only_torch_and_the_standard_library():
    assert imports(ROOT / "model.py") <= {"torch", "__future__"} | set(sys.stdlib_module_names)


@pytest.mark.parametrize("name", ["errors.py", "hardware.py", "tokenizer.py", "checkpoint.py", "optim.py"])
def test_no_module_imports_the_configuration_for_an_exception(name):
    runtime = imports(ROOT / name)
    if name == "optim.py":  # a type annotation, imported under TYPE_CHECKING only
        src = (ROOT / name).read_text()
        assert "if TYPE_CHECKING:" in src and src.index("from config import") > src.index("if TYPE_CHECKING:")
        return
    assert "config" not in runtime
    assert imports(ROOT / "errors.py") == set()


@pytest.mark.parametrize("name", CORE + TOOLS + sorted(p.relative_to(ROOT).as_posix()
                                                      for p in (ROOT / "config").glob("*.toml")) + ["README.md"])
def test_nothing_of_the_product_names_a_file_outside_the_repository(name):
    text = (ROOT / name).read_text(encoding="utf-8")
    for outside in ("../shared", "shared/data", "ANCHORS"):
        assert outside not in text, f"{name} names {outside}"
