"""`solverkit schema`: the JSON Schemas accept the example configs and reject broken ones."""

import json
from pathlib import Path

import pytest
import yaml

from solverkit.cli import main
from solverkit.registry import layer_types

from .conftest import MLP, SHARED

jsonschema = pytest.importorskip("jsonschema")

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NET_CONFIGS = sorted(CONFIGS.glob("**/*_net.yaml"))
SOLVER_CONFIGS = sorted([*CONFIGS.glob("**/*_solver.yaml"), *CONFIGS.glob("solvers/*.yaml")])


@pytest.fixture(scope="module")
def schemas(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schemas")
    assert main(["schema", "-o", str(folder)]) == 0
    out = {}
    for kind in ("net", "solver"):
        schema = json.loads((folder / f"{kind}.schema.json").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        out[kind] = jsonschema.Draft202012Validator(schema)
    return out


def _errors(validator, document):
    return [e.message for e in validator.iter_errors(document)]


def test_every_registered_layer_type_is_described(schemas):
    schema = schemas["net"].schema
    mapping = schema["properties"]["layers"]["items"]["discriminator"]["mapping"]
    types = layer_types()
    assert set(mapping) == set(types)
    for name, cls in types.items():
        definition = schema["$defs"][mapping[name].split("/")[-1]]
        assert definition["properties"]["type"]["const"] == name
        assert definition["additionalProperties"] is False
        for field in ("name", "bottom", "top", "include", "param", *cls.Params.model_fields):
            assert field in definition["properties"], (name, field)


def test_the_examples_are_there():
    assert len(NET_CONFIGS) >= 3 and len(SOLVER_CONFIGS) >= 3


@pytest.mark.parametrize("path", NET_CONFIGS + SOLVER_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_the_example_configs_validate(schemas, path):
    kind = "net" if path.name.endswith("_net.yaml") else "solver"
    assert _errors(schemas[kind], yaml.safe_load(path.read_text())) == []


def test_single_values_and_lists_both_validate(schemas):
    for text in (MLP, SHARED):
        assert _errors(schemas["net"], yaml.safe_load(text)) == []
    solver = {"base_lr": 0.1, "max_iter": 10, "lr_policy": "multistep", "gamma": 0.1}
    assert _errors(schemas["solver"], {**solver, "stepvalue": 5}) == []
    assert _errors(schemas["solver"], {**solver, "stepvalue": [5, 8]}) == []


@pytest.mark.parametrize("change", [
    lambda net: net["layers"][1].update(num_ouput=16),                  # unknown field
    lambda net: net["layers"][1].update(num_output="sixteen"),          # wrong type
    lambda net: net["layers"][1].update(num_output=-3),                 # must be > 0
    lambda net: net["layers"][1].update(type="InnerProdcut"),           # unknown type
    lambda net: net["layers"][1].update(weight_filler={"type": "xavir"}),
    lambda net: net["layers"][5].update(include={"phase": "TRIAN"}),
    lambda net: net["layers"][2].pop("name"),
    lambda net: net.update(dtype="float16"),
])
def test_broken_nets_do_not_validate(schemas, change):
    net = yaml.safe_load(MLP)
    change(net)
    assert _errors(schemas["net"], net)


@pytest.mark.parametrize("solver", [
    {"base_lr": 0.1},                                                   # max_iter missing
    {"base_lr": 0.1, "max_iter": 10, "type": "Adamm"},
    {"base_lr": 0.1, "max_iter": 10, "lr_policy": "stepp"},
    {"base_lr": 0.1, "max_iter": 10, "momentum": 1.5},
    {"base_lr": 0.1, "max_iter": 10, "learning_rate": 0.1},
])
def test_broken_solvers_do_not_validate(schemas, solver):
    assert _errors(schemas["solver"], solver)


def test_per_type_fields_say_who_uses_them(schemas):
    properties = schemas["solver"].schema["properties"]
    assert "RMSProp (0.99)" in properties["rms_decay"]["description"]
    assert "step (required)" in properties["stepsize"]["description"]
