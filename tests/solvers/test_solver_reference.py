"""docs/solvers.md is generated from the registries: it must be up to date and complete."""

import importlib.util
from pathlib import Path

from solverkit.registry import policies, update_types

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("solver_reference",
                                                  ROOT / "scripts" / "solver_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_solvers_md_is_up_to_date_and_names_every_builtin():
    text = _script().render()
    assert (ROOT / "docs" / "solvers.md").read_text(encoding="utf-8") == text, \
        "docs/solvers.md is stale: run python scripts/solver_reference.py"
    builtins = [(name, obj) for table in (update_types(), policies())
                for name, obj in table.items() if obj.__module__.startswith("solverkit.")]
    assert len(builtins) >= 15
    for name, obj in builtins:
        assert f"### {name}\n" in text
        for field in obj.Params.model_fields:
            assert f"| `{field}` |" in text.split(f"### {name}\n", 1)[1].split("###")[0]


def test_solver_guide_names_every_builtin_type_and_policy():
    section = (ROOT / "docs" / "solver-specs.md").read_text(encoding="utf-8").split("\n## Solvers\n")[1]
    section = section.split("\n## ")[0]
    for table in (update_types(), policies()):
        for name, obj in table.items():
            if obj.__module__.startswith("solverkit."):
                assert f"`{name}`" in section, name
