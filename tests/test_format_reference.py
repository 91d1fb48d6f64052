"""docs/formats.md is generated from the format registries: it must be up to date."""

import importlib.util
from pathlib import Path

from solverkit.data import source_formats
from solverkit.export import exporters

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("format_reference",
                                                  ROOT / "scripts" / "format_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_formats_md_is_up_to_date():
    committed = (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
    assert committed == _script().render(), \
        "docs/formats.md is stale: run python scripts/format_reference.py"


def test_every_builtin_format_and_exporter_is_listed():
    text = _script().render()
    for name, cls in source_formats().items():
        if cls.__module__.startswith("solverkit."):
            assert f"| `{name}` | {cls.layer} |" in text
    for name, cls in exporters().items():
        if cls.__module__.startswith("solverkit."):
            assert f"| `{name}` | " + ", ".join(f"`{s}`" for s in cls.suffixes) in text
