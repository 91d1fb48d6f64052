"""Write docs/layers.md: every built-in layer type, its fields, their types and defaults.

The reference is generated from the layer registry and each type's pydantic ``Params``
model, so it cannot drift from the code; a test fails when the committed file is stale.

    python scripts/layer_reference.py            # rewrite docs/layers.md
    python scripts/layer_reference.py --check    # exit 1 if docs/layers.md is out of date
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from solverkit.layers import Layer
from solverkit.registry import layer_types
from solverkit.spec.net import FillerSpec, NetSpec, NetStateRule, ParamSpec
from solverkit.spec.schema import NetStateRuleYaml, layer_entry_model

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "layers.md"
FAMILIES = ["data", "inputs", "vision", "inner_product", "activation", "arithmetic",
            "normalization", "loss", "shape"]
# families whose module name does not read as a title
FAMILY_TITLES = {"hdf5": "HDF5", "batch_selection": "Batch selection",
                 "window_data": "Window data", "inner_product": "Inner product"}


def type_name(annotation) -> str:
    """A YAML reader's name for a field's type: ``int``, ``list of int``, ``SUM | PROD``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is typing.Any:
        return "any"
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args if a is not type(None))
    if origin is list:
        return f"list of {type_name(args[0])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        title = annotation.model_config.get("title") or annotation.__name__
        return f"[{title}](#{title.lower()})"
    return getattr(annotation, "__name__", str(annotation))


def default_text(info) -> str:
    if info.is_required():
        return "**required**"
    value = info.default_factory() if info.default_factory is not None else info.default
    if value is PydanticUndefined:
        return "**required**"
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_defaults=True) or "defaults"
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`" if value != [] else "`[]`"


def constraints(info) -> str:
    """``> 0``, ``≥ 0``... from the field's annotated constraints."""
    words = []
    for item in info.metadata:
        for attr, symbol in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attr, None)
            if value is not None:
                words.append(f"{symbol} {value}")
        if getattr(item, "min_length", None):
            words.append(f"at least {item.min_length} entries")
    return ", ".join(words)


def fields_table(model: type[BaseModel], skip=()) -> list[str]:
    rows = ["| field | type | default | notes |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        notes = "; ".join(n for n in (constraints(info), info.description or "") if n)
        notes = notes.replace("|", "\\|")
        rows.append(f"| `{name}` | {type_name(info.annotation)} | {default_text(info)} | "
                    f"{notes} |")
    return rows if len(rows) > 2 else ["No fields of its own."]


def counts(cls) -> str:
    def span(low, high, what):
        low = low or 0
        if high == low:
            return f"{low} {what}{'s' if low != 1 else ''}"
        return f"{low}+ {what}s" if high is None else f"{low}–{high} {what}s"
    return f"{span(cls.min_bottoms, cls.max_bottoms, 'bottom')}, " \
           f"{span(cls.min_tops, cls.max_tops, 'top')}"


def traits(cls) -> str:
    notes = []
    if cls.is_loss:
        notes.append("loss (loss_weight 1 on its first top)")
    if not cls.has_backward:
        notes.append("no backward")
    if cls.allows_in_place:
        notes.append("may work in place")
    return "; ".join(notes)


def common_table() -> list[str]:
    """The common fields as YAML writes them (one value or a list), from the net schema."""
    rows = fields_table(layer_entry_model("TYPE", Layer))
    type_row = "| `type` | str | **required** | a registered layer type (below, or a plugin's) |"
    return [type_row if row.startswith("| `type` |") else row for row in rows]


def render() -> str:
    builtin = {name: cls for name, cls in layer_types().items()
               if cls.__module__.startswith("solverkit.layers.")}
    by_family: dict[str, list[str]] = {}
    for name, cls in builtin.items():
        by_family.setdefault(cls.__module__.rsplit(".", 1)[-1], []).append(name)
    families = [f for f in FAMILIES if f in by_family] + sorted(set(by_family) - set(FAMILIES))
    out = ["# Layer reference", "",
           ("Generated by `python scripts/layer_reference.py` from the layer registry and each "
           "type's pydantic model; do not edit by hand. Field names are Caffe's and sit flat "
           "in a layer entry, beside the common fields."), ""]
    for family in families:
        names = sorted(by_family[family], key=str.lower)
        out.append(f"- **{family}**: " + ", ".join(f"[{n}](#{n.lower()})" for n in names))
    out += ["", "## Common fields", "",
            ("Every layer entry has these (`bottom`, `top`, `include`, `exclude`, "
            "`loss_weight`, `param`, `propagate_down` take one value or a list)."), "",
            *common_table(), "",
            "### Net", "", *fields_table(NetSpec, skip=("layers",)), ""]
    for model in (NetStateRule, ParamSpec, FillerSpec):
        doc = inspect.getdoc(model) or ""
        shown = NetStateRuleYaml if model is NetStateRule else model
        out += [f"### {model.__name__}", "", doc.splitlines()[0] if doc else "", "",
                *fields_table(shown), ""]
    nested: dict[str, type[BaseModel]] = {}
    for family in families:
        out += [f"## {FAMILY_TITLES.get(family, family.capitalize())} layers", ""]
        for name in sorted(by_family[family], key=str.lower):
            cls = builtin[name]
            doc = inspect.getdoc(cls) or ""
            summary = doc.split("\n\n")[0].replace("\n", " ")
            out += [f"### {name}", "", summary, "",
                    f"*{counts(cls)}" + (f"; {traits(cls)}" if traits(cls) else "") + ".*", "",
                    *fields_table(cls.Params), ""]
            for info in cls.Params.model_fields.values():
                for arg in (info.annotation, *typing.get_args(info.annotation)):
                    if (isinstance(arg, type) and issubclass(arg, BaseModel)
                            and arg not in (FillerSpec, ParamSpec, NetStateRule)):
                        nested[arg.__name__] = arg
    for model_name, model in sorted(nested.items()):
        doc = inspect.getdoc(model) or ""
        out += [f"## {model_name}", "", doc.split("\n\n")[0].replace("\n", " "), "",
                *fields_table(model), ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the file differs from what the code gives")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run python scripts/layer_reference.py",
                  file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
