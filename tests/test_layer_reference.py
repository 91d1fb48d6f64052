"""docs/layers.md is generated from the registry: it must be up to date and complete."""

import importlib.util
from pathlib import Path

from solverkit.registry import layer_types

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("layer_reference",
                                                  ROOT / "scripts" / "layer_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_layers_md_is_up_to_date():
    committed = (ROOT / "docs" / "layers.md").read_text(encoding="utf-8")
    assert committed == _script().render(), \
        "docs/layers.md is stale: run python scripts/layer_reference.py"


def test_every_builtin_type_and_field_is_documented():
    text = _script().render()
    sections = {block.split("\n", 1)[0]: block for block in text.split("\n### ")[1:]}
    for name, cls in layer_types().items():
        if not cls.__module__.startswith("solverkit.layers."):
            continue                                  # plugins registered by other tests
        assert name in sections, name
        for field in cls.Params.model_fields:
            assert f"| `{field}` |" in sections[name], (name, field)
