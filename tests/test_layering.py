"""Import layering: evaluation and generation never load training code, and no sub-command module
imports `rrnet.cli` (which imports them).

Each module is imported in a fresh interpreter, so what one test imported cannot hide what
another module pulls in.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import rrnet
import rrnet.eval

SRC = Path(rrnet.__file__).parent

# how a model is trained: the training loops, their optimiser and checkpoint code
TRAINING = {
    "rrnet.train",
    "rrnet.training_state",
    "rrnet.resume",
    "rrnet.mixed_precision",
    "rrnet.direction_targets",
    "rrnet.baselines.training",
    "rrnet.baselines.loop",
    "rrnet.baselines.exemplars",
    "rrnet.world.build",
}


def _is_training(module: str) -> bool:
    return module in TRAINING or (module.startswith("rrnet.baselines.") and module.endswith("_training"))


def _eval_modules() -> list[str]:
    found = [m.name for m in pkgutil.walk_packages(rrnet.eval.__path__, "rrnet.eval.")]
    return ["rrnet.eval", *sorted(found)]


# evaluation, generation, and how evaluation applies a trained baseline
APPLYING = [
    *_eval_modules(),
    "rrnet.generate",
    "rrnet.rectifier_files",
    "rrnet.baselines",
    "rrnet.baselines.config",
    "rrnet.baselines.methods",
    "rrnet.baselines.lora",
    "rrnet.baselines.personalized",
    "rrnet.baselines.textual_inversion",
]


def _loaded_after(code: str) -> list[str]:
    """The rrnet modules loaded once `code` has run in a fresh interpreter."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('rrnet'))))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def loaded_by_each() -> dict[str, list[str]]:
    """The rrnet modules each of APPLYING adds, imported one after another in one fresh interpreter.

    As long as no module before it loaded training code, a training module that appears while
    importing a module was loaded by that module, so one interpreter answers for all of them."""
    script = (
        "import importlib, json, sys\n"
        "added = {}\n"
        f"for name in {APPLYING!r}:\n"
        "    before = set(sys.modules)\n"
        "    importlib.import_module(name)\n"
        "    added[name] = sorted(m for m in sys.modules if m.startswith('rrnet') and m not in before)\n"
        "print(json.dumps(added))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", APPLYING)
def test_evaluation_and_generation_load_no_training_code(module, loaded_by_each):
    earlier = APPLYING[: APPLYING.index(module)]
    assert not any(_is_training(m) for name in earlier for m in loaded_by_each[name]), "an earlier module loaded training code"
    assert [m for m in loaded_by_each[module] if _is_training(m)] == []


def test_evaluating_baselines_loads_no_training_code(tmp_path):
    """`rrnet evaluate --baseline ...` builds every baseline's method without importing how it was trained."""
    folders = {kind: tmp_path / kind for kind in ("personalized", "textual_inversion", "lora")}
    for folder in folders.values():
        folder.mkdir()
    argv = ["evaluate", "--model", "m", "--benchmark", "b", "--output_dir", "o", "--rectifiers", str(tmp_path),
            "--baseline", *(f"{kind}={folder}" for kind, folder in folders.items())]
    code = ("import argparse\n"
            "from rrnet.eval.cli import add_evaluate_parser, build_methods\n"
            "parser = argparse.ArgumentParser(); add_evaluate_parser(parser.add_subparsers(dest='command'))\n"
            f"methods = build_methods(parser.parse_args({argv!r}))\n"
            "assert len(methods) == 5, methods\n")
    loaded = _loaded_after(code)
    assert "rrnet.baselines.methods" in loaded
    assert [m for m in loaded if _is_training(m)] == []


def _subcommand_modules() -> list[str]:
    """Modules that add a sub-command's parser (`def add_*_parser`), `rrnet.cli` itself aside."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.FunctionDef) and node.name.startswith("add_") and node.name.endswith("_parser")
               for node in tree.body):
            module = ".".join(("rrnet", *path.relative_to(SRC).with_suffix("").parts))
            if module != "rrnet.cli":
                found.append(module)
    return found


def test_the_subcommand_modules_are_found():
    assert {"rrnet.eval.cli", "rrnet.baselines.cli", "rrnet.analysis.cli", "rrnet.experiment",
            "rrnet.demo"} <= set(_subcommand_modules())


@pytest.fixture(scope="module")
def cli_loaded_by_each() -> dict[str, bool]:
    """For each sub-command module, imported and its parsers added one after another in one fresh
    interpreter: whether `rrnet.cli` was loaded by then (once loaded it stays, so the first module
    that loads it is the first True)."""
    script = (
        "import argparse, importlib, json, sys\n"
        "seen = {}\n"
        f"for name in {_subcommand_modules()!r}:\n"
        "    m = importlib.import_module(name)\n"
        "    sub = argparse.ArgumentParser().add_subparsers(dest='command')\n"
        "    for attr in dir(m):\n"
        "        if attr.startswith('add_') and attr.endswith('_parser'):\n"
        "            getattr(m, attr)(sub)\n"
        "    seen[name] = 'rrnet.cli' in sys.modules\n"
        "print(json.dumps(seen))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", _subcommand_modules())
def test_subcommand_modules_do_not_import_the_cli(module, cli_loaded_by_each):
    """Importing a sub-command module and adding its parser never loads `rrnet.cli`."""
    assert cli_loaded_by_each[module] is False


def _imports_cli(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "rrnet.cli" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and not node.level:
            if node.module == "rrnet.cli" or (node.module == "rrnet" and any(a.name == "cli" for a in node.names)):
                return True
    return False


def test_no_library_module_imports_the_cli_even_inside_a_function():
    """The command line sits on top: nothing in the package imports `rrnet.cli`, lazily or not
    (except `python -m rrnet`'s `__main__.py`, which only runs it)."""
    offenders = [str(path.relative_to(SRC)) for path in sorted(SRC.rglob("*.py"))
                 if path.name not in ("cli.py", "__main__.py") or path.parent != SRC
                 if _imports_cli(ast.parse(path.read_text(encoding="utf-8")))]
    assert offenders == []
