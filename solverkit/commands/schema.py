"""Write JSON Schemas of the net and solver specs (net.schema.json, solver.schema.json).

Editors validate and complete the YAML with them: put the line
'# yaml-language-server: $schema=<DIR>/net.schema.json' at the top of a net file.
The schemas cover every registered layer type, update type, lr policy and callback (plus
those of --plugins modules); the Data layer's ``format`` lists every registered file format.
The registered source formats and exporters are printed too.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data import source_formats
from ..errors import ConfigError
from ..export import exporters
from ..runs import file_operation
from ..spec.schema import net_schema, solver_schema


def add_arguments(parser) -> None:
    parser.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="folder to write net.schema.json and solver.schema.json into")
    parser.add_argument("--plugins", nargs="+", default=[], metavar="MODULE",
                        help="plugin modules whose layers, update types, lr policies and "
                             "formats the schemas should include")


def run(args) -> int:
    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise ConfigError("is a file, not a folder", file=str(folder), field="-o")
    schemas = (("net.schema.json", net_schema(args.plugins)),    # plugins fail before any write
               ("solver.schema.json", solver_schema(args.plugins)))
    with file_operation("create the schema folder", folder):
        folder.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas:
        path = folder / name
        with file_operation("write the schema", path):
            path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    print("source formats: " + _names(source_formats()))
    print("exporters: " + _names(exporters()))
    return 0


def _names(registry: dict) -> str:
    """``npz (.npz), idx, ...``: registered names with their suffixes."""
    return ", ".join(name + (f" ({' '.join(cls.suffixes)})" if cls.suffixes else "")
                     for name, cls in registry.items())
