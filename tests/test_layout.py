"""The floors of the package (README's Layout): each module imports only the floors below it.

Read from the source's import statements (nothing is imported here), so a new arrow that runs back up,
such as the study importing a command or a job importing the command-line layer, fails by name.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autogan_fast"
COMMANDS = {"autogan_fast.search", "autogan_fast.train", "autogan_fast.evaluate", "autogan_fast.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """The autogan_fast modules (and names under them) that the file at `path` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.update({module, *(f"{module}.{alias.name}" for alias in node.names)})
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("autogan_fast")}


def modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("folder, forbidden, why", [
    ("study", COMMANDS - {"autogan_fast.cli"}, "the study drives jobs with typed settings, not command lines"),
    ("jobs", COMMANDS | {"autogan_fast.study", "autogan_fast.flags"}, "jobs sit below every command line"),
    ("nas", {"autogan_fast.jobs", "autogan_fast.training", *COMMANDS}, "the search loop sits below the jobs"),
    ("training", {"autogan_fast.jobs", "autogan_fast.nas.loop", *COMMANDS}, "training is the search's peer"),
    ("runs", {"autogan_fast.jobs", "autogan_fast.nas", "autogan_fast.training", "autogan_fast.models", *COMMANDS},
     "the run folder knows no model, loop or job"),
])
def test_no_arrow_runs_back_up(folder, forbidden, why):
    for path in modules_under(folder):
        upward = {m for m in imported(path) if any(m == f or m.startswith(f + ".") for f in forbidden)}
        assert not upward, f"{path.relative_to(PACKAGE.parent)} imports {sorted(upward)}: {why}"


def test_the_layout_test_sees_imports():
    """The check above could pass by reading nothing: the runner's imports must include the jobs it drives."""
    assert {"autogan_fast.jobs.driver", "autogan_fast.jobs.proxy"} <= imported(PACKAGE / "study" / "runner.py")
