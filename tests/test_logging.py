"""Library modules log through module loggers and never print; the command maps --verbose/--quiet.

Printing is for a command's own output: the `cli.py` modules, the `run_*` entry points of the
sub-commands and `if __name__ == "__main__"` blocks. Everything else goes through
`logging.getLogger(__name__)`, which `rrnet` shows on stderr at the level its flags choose.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

import rrnet
import rrnet.cli as cli

SOURCE = Path(rrnet.__file__).parent


def _prints_outside_commands(path: Path) -> list[str]:
    """`print(...)` calls of a module that are not a command's output."""
    found: list[str] = []

    def walk(node: ast.AST, where: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = where + [child.name]
            elif isinstance(child, ast.If) and "__main__" in ast.unparse(child.test):
                inner = where + ["__main__"]
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "print"
                    and not any(name == "__main__" or name == "main" or name.startswith("run_") for name in inner)):
                found.append(f"{path.relative_to(SOURCE.parent)}:{child.lineno} in {'.'.join(inner) or 'module'}")
            walk(child, inner)

    walk(ast.parse(path.read_text(encoding="utf-8")), [])
    return found


def test_library_modules_never_print():
    modules = [p for p in SOURCE.rglob("*.py") if p.name != "cli.py"]  # cli.py modules: command output
    assert len(modules) > 30
    offenders = [hit for path in sorted(modules) for hit in _prints_outside_commands(path)]
    assert offenders == [], "library code prints instead of logging: " + "; ".join(offenders)


@pytest.fixture()
def noisy_generate(monkeypatch):
    """`rrnet generate` replaced by a stand-in that logs one note and one warning and records its args."""
    seen = []

    def fake_run_generate(args) -> None:
        seen.append(args)
        log = logging.getLogger("rrnet.generate")
        log.info("a note for --verbose")
        log.warning("a warning shown by default")

    monkeypatch.setattr(cli, "run_generate", fake_run_generate)
    return seen


@pytest.mark.parametrize(("flags", "shown", "hidden", "no_progress"), [
    ([], ["a warning shown by default"], ["a note for --verbose"], False),
    (["--verbose"], ["a warning shown by default", "a note for --verbose"], [], False),
    (["--quiet"], [], ["a warning shown by default", "a note for --verbose"], True),
])
def test_verbose_and_quiet_choose_what_the_command_shows(noisy_generate, capsys, flags, shown, hidden, no_progress):
    for _ in range(2):  # a second run in the same process writes to the stderr of that run, once
        code = cli.main([*flags, "generate", "--model", "m", "--output_dir", "o"])
        out = capsys.readouterr()
        assert code == 0 and out.out == ""
        for text in shown:
            assert out.err.count(f"rrnet: {text}\n") == 1, out.err
        for text in hidden:
            assert text not in out.err
    assert noisy_generate[-1].no_progress is no_progress  # --quiet: errors only, no progress bars either


def test_verbose_and_quiet_exclude_each_other(capsys):
    assert cli.main(["--verbose", "--quiet", "generate", "--model", "m", "--output_dir", "o"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
