"""The house rules of the layout, read from the source: the scripts at the top are thin and import the
package and model.py, never each other; the package imports model.py and never a script; nothing of
the product imports the tools; model.py needs only torch; an exception needs no configuration; and no
file of the product points outside the repository."""
from __future__ import annotations

import ast
import sys

import pytest

from helpers import PACKAGE, PRODUCT, ROOT, SCRIPTS, TOOLS, imports

SCRIPT_NAMES = {p[:-3] for p in SCRIPTS} - {"model"}
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
THIRD_PARTY = {"torch", "numpy", "tiktoken", "tqdm", "safetensors"}  # requirements.txt
OPTIONAL = {"smallgpt/plots.py": {"matplotlib", "PIL"}, "smallgpt/loggers.py": {"wandb"},
            "smallgpt/formats.py": {"pyarrow", "zstandard"}}  # imported where used


def test_the_top_level_holds_the_scripts_model_py_and_folders_only():
    assert set(SCRIPTS) == {"model.py", "prepare.py", "train.py", "sample.py", "eval.py", "export.py", "plot.py"}
    assert {"smallgpt", "tools", "tests", "config", "docs"} <= {p.name for p in ROOT.iterdir() if p.is_dir()}


@pytest.mark.parametrize("name", sorted(SCRIPT_NAMES))
def test_a_script_imports_the_package_and_model_py_never_another_script(name):
    used = imports(ROOT / f"{name}.py") - STDLIB
    assert not used & SCRIPT_NAMES, f"{name}.py imports a script: {used & SCRIPT_NAMES}"
    assert used <= {"smallgpt", "model"}, f"{name}.py imports {used - {'smallgpt', 'model'}}: that belongs in the package"


@pytest.mark.parametrize("name", sorted(SCRIPT_NAMES))
def test_a_script_is_its_command_line_and_a_call_into_the_package(name):
    """At most a handful of small functions: the settings, main, and the glue between them."""
    tree = ast.parse((ROOT / f"{name}.py").read_text(encoding="utf-8"))
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert any(f.name == "main" for f in functions)
    assert sum(f.end_lineno - f.lineno + 1 for f in functions) <= 40, f"{name}.py does work the package should do"


@pytest.mark.parametrize("name", PACKAGE)
def test_the_package_imports_model_py_and_never_a_script_or_a_tool(name):
    used = imports(ROOT / name) - STDLIB
    assert not used & (SCRIPT_NAMES | {"tools"}), f"{name} imports {used & (SCRIPT_NAMES | {'tools'})}"
    allowed = {"smallgpt", "model"} | THIRD_PARTY | OPTIONAL.get(name, set())
    assert used <= allowed, f"{name} needs {used - allowed}"


def test_model_py_needs_only_torch_and_the_standard_library():
    assert imports(ROOT / "model.py") <= {"torch"} | STDLIB


@pytest.mark.parametrize("name", ["errors.py", "hardware.py", "tokenizer.py", "checkpoint.py", "optim.py", "cli.py"])
def test_no_module_imports_the_configuration_for_an_exception(name):
    """An error, a device or a checkpoint needs no settings: these modules never import the run's sections
    (optim.py names their type under TYPE_CHECKING only), and the command line needs neither torch nor the model."""
    path = ROOT / "smallgpt" / name
    src = path.read_text(encoding="utf-8")
    runtime = ast.parse(src)
    top = [n for n in runtime.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    modules = {n.module for n in top if isinstance(n, ast.ImportFrom)} | {a.name for n in top if isinstance(n, ast.Import)
                                                                          for a in n.names}
    assert "smallgpt.config" not in modules
    if name == "cli.py":
        assert not {"torch", "model"} & {m.split(".")[0] for m in modules if m}
    assert imports(ROOT / "smallgpt" / "errors.py") == set()


@pytest.mark.parametrize("name", PRODUCT + TOOLS + sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "config").glob("*.toml"))
                         + ["README.md"] + sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")))
def test_nothing_of_the_product_names_a_file_outside_the_repository(name):
    text = (ROOT / name).read_text(encoding="utf-8")
    for outside in ("../shared", "shared/data", "ANCHORS"):
        assert outside not in text, f"{name} names {outside}"


def test_the_tools_run_as_modules_without_path_hacks():
    for name in TOOLS:
        src = (ROOT / name).read_text(encoding="utf-8")
        assert "sys.path" not in src and "noqa: E402" not in src, name
