"""The solver spec: per-type defaults, unused and missing fields, --set overrides, paths."""

import pytest

import solverkit as sk
from solverkit.registry import update_types

SOLVER_TYPES = tuple(update_types())     # the registered update types

BASE = "base_lr: 0.01\nmax_iter: 100\n"


def load(text, overrides=None, tmp_path=None):
    if tmp_path is None:
        return sk.load_solver_spec(BASE + text, overrides)
    path = tmp_path / "solver.yaml"
    path.write_text(BASE + text)
    return sk.load_solver_spec(path, overrides)


def error_of(text, overrides=None, tmp_path=None) -> sk.ConfigError:
    with pytest.raises(sk.ConfigError) as info:
        load(text, overrides, tmp_path)
    return info.value


def test_defaults_of_spec_section_4():
    s = load("")
    assert (s.type, s.lr_policy, s.weight_decay, s.regularization_type, s.display,
            s.average_loss, s.iter_size, s.test_interval, s.test_iter, s.test_initialization,
            s.snapshot, s.snapshot_after_train, s.clip_gradients, s.warmup_iter,
            s.momentum) == ("SGD", "fixed", 0.0, "L2", 0, 1, 1, 0, None, True, 0, True, -1.0,
                            0, 0.0)


@pytest.mark.parametrize("solver_type, expected", [
    ("SGD", {"momentum": 0.0, "delta": None}),
    ("Nesterov", {"momentum": 0.0}),
    ("AdaGrad", {"delta": 1e-8, "momentum": None}),
    ("RMSProp", {"rms_decay": 0.99, "delta": 1e-8}),
    ("AdaDelta", {"momentum": 0.95, "delta": 1e-6}),
    ("Adam", {"momentum": 0.9, "momentum2": 0.999, "delta": 1e-8}),
    ("AdamW", {"momentum": 0.9, "momentum2": 0.999, "delta": 1e-8}),
])
def test_per_type_defaults(solver_type, expected):
    s = load(f"type: {solver_type}\n")
    assert {name: getattr(s, name) for name in expected} == expected


def test_set_type_brings_the_new_types_defaults(tmp_path):
    s = load("type: SGD\nlr_policy: step\ngamma: 0.1\nstepsize: 10\n", ["type=Adam"], tmp_path)
    assert (s.type, s.momentum, s.momentum2, s.delta) == ("Adam", 0.9, 0.999, 1e-8)
    again = sk.load_solver_spec(s, {"type": "RMSProp"})
    assert (again.type, again.momentum, again.rms_decay, again.stepsize) == (
        "RMSProp", None, 0.99, 10)


def test_set_values_are_typed_by_the_spec():
    s = load("", ["base_lr=1e-3", "test_initialization=false", "lr_policy=multistep",
                  "gamma=0.5", "stepvalue=[10, 20]", "snapshot_prefix=2024"])
    assert (s.base_lr, s.test_initialization, s.stepvalue, s.snapshot_prefix) == (
        0.001, False, [10, 20], "2024")


def test_momentum_zero_is_accepted_by_every_type():
    for solver_type in SOLVER_TYPES:
        assert load(f"type: {solver_type}\nmomentum: 0\n").type == solver_type


@pytest.mark.parametrize("text, field, words", [
    ("type: AdaGrad\nmomentum: 0.9\n", "momentum", "AdaGrad does not use momentum"),
    ("type: RMSProp\nmomentum: 0.9\n", "momentum", "RMSProp does not use momentum"),
    ("rms_decay: 0.9\n", "rms_decay", "SGD does not use rms_decay"),
    ("type: Nesterov\ndelta: 1e-8\n", "delta", "Nesterov does not use delta"),
    ("type: RMSProp\nmomentum2: 0.9\n", "momentum2", "RMSProp does not use momentum2"),
    ("lr_policy: step\ngamma: 0.1\n", "stepsize", "lr_policy step needs stepsize"),
    ("lr_policy: multistep\ngamma: 0.1\n", "stepvalue", "lr_policy multistep needs stepvalue"),
    ("lr_policy: inv\ngamma: 0.1\n", "power", "lr_policy inv needs power"),
    ("gamma: 0.1\n", "gamma", "lr_policy fixed does not use gamma"),
    ("lr_policy: step\ngamma: 0.1\nstepsize: 5\npower: 1\n", "power", "does not use power"),
    ("min_lr: 0.1\n", "min_lr", "does not use min_lr"),
    ("lr_policy: multistep\ngamma: 0.1\nstepvalue: [10, 30, 30]\n", "stepvalue",
     "strictly increasing"),
    ("lr_policy: multistep\ngamma: 0.1\nstepvalue: [30, 10]\n", "stepvalue",
     "strictly increasing"),
    ("type: AdamW\nregularization_type: L1\n", "regularization_type", "absent or L2"),
    ("elastic_net_beta: 0.5\n", "elastic_net_beta", "ElasticNet"),
    ("iter_size: 0\n", "iter_size", "greater than or equal to 1"),
    ("type: RMSprop\n", "type", "did you mean 'RMSProp'?"),
])
def test_unused_and_missing_fields_are_errors_naming_the_field(text, field, words, tmp_path):
    err = error_of(text, tmp_path=tmp_path)
    assert err.field == field
    assert words in str(err)
    assert "solver.yaml" in str(err)


def test_unknown_field_has_file_line_and_suggestion(tmp_path):
    err = error_of("display: 10\nmomentun: 0.9\n", tmp_path=tmp_path)
    assert str(err).startswith(f"{tmp_path / 'solver.yaml'}:4: field 'momentun'")
    assert "did you mean 'momentum'?" in str(err)


def test_required_fields():
    with pytest.raises(sk.ConfigError, match="base_lr"):
        sk.load_solver_spec("max_iter: 10\n")
    with pytest.raises(sk.ConfigError, match="max_iter"):
        sk.load_solver_spec({"base_lr": 0.1})


@pytest.mark.parametrize("override, words", [
    (["momentm=0.9"], "unknown solver field 'momentm' (did you mean 'momentum'?)"),
    (["base_lr"], "key=value"),
    (["base_lr=fast"], "--set base_lr=fast"),
    (["type=AdaGrad", "momentum=0.5"], "AdaGrad does not use momentum"),
])
def test_bad_set(override, words):
    with pytest.raises(sk.ConfigError) as info:
        load("", override)
    assert words in str(info.value)


def test_test_iter_without_test_interval_is_allowed():
    assert load("test_iter: 5\n").test_iter == 5


def test_net_is_relative_to_the_solver_file_and_net_argument_wins(tmp_path):
    (tmp_path / "sub").mkdir()
    net = "name: tiny\nlayers:\n  - {name: x, type: Input, top: x, shape: [[1, 2]]}\n"
    (tmp_path / "sub" / "net.yaml").write_text(net)
    (tmp_path / "other.yaml").write_text(net.replace("tiny", "other"))
    solver_file = tmp_path / "sub" / "solver.yaml"
    solver_file.write_text(BASE + "net: net.yaml\n")
    assert sk.Solver(solver_file).net.name == "tiny"
    assert sk.Solver(solver_file, net=tmp_path / "other.yaml").net.name == "other"
    solver_file.write_text(BASE)
    with pytest.raises(sk.ConfigError, match="no net given") as info:
        sk.Solver(solver_file)
    assert info.value.field == "net"


def test_net_given_through_set_is_relative_to_the_working_folder(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    solver_file = tmp_path / "sub" / "solver.yaml"
    solver_file.write_text(BASE + "net: net.yaml\n")
    spec = sk.load_solver_spec(solver_file)
    assert spec.resolve(spec.net) == tmp_path / "sub" / "net.yaml"
    monkeypatch.chdir(tmp_path)
    spec = sk.load_solver_spec(solver_file, ["net=other.yaml"])
    assert spec.resolve(spec.net) == (tmp_path / "other.yaml").resolve()


def test_the_spec_is_the_common_fields_plus_the_rules_and_the_policys_own():
    spec = sk.load_solver_spec(BASE + "type: Adam\nmomentum2: 0.99\nlr_policy: step\n"
                                      "stepsize: 10\ngamma: 0.5\n")
    assert type(spec) is sk.SolverSpec                  # one class for every type and policy
    adam, step = sk.registry.update_class("Adam"), sk.registry.policy("step")
    assert type(spec.rule_params) is adam.Params and type(spec.policy_params) is step.Params
    assert spec.rule_params.momentum2 == spec.momentum2 == 0.99
    assert spec.rule_params.delta == 1e-8 and "delta" not in spec.rule_params.model_fields_set
    assert (spec.policy_params.stepsize, spec.gamma) == (10, 0.5)
    assert spec.rms_decay is None                       # RMSProp's: not this type's
    with pytest.raises(AttributeError):
        spec.no_such_field                              # noqa: B018
    flat = spec.model_dump()
    assert flat["momentum2"] == 0.99 and flat["stepsize"] == 10 and flat["base_lr"] == 0.01
    assert "rms_decay" not in flat
    given = {name: was for name, _, was in spec.given_fields()}
    assert given["momentum2"] and given["stepsize"] and not given["delta"]
    # --set keeps the parts apart: a new type gets its own fields and defaults
    other = sk.load_solver_spec(spec, {"type": "RMSProp", "momentum2": None})
    assert type(other.rule_params) is sk.registry.update_class("RMSProp").Params
    assert other.stepsize == 10 and other.momentum2 is None


def test_each_part_reports_its_own_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BASE + "type: Adam\nmomentum2: 2\nlr_policy: step\nstepsize: 10\n"
                           "gamma: 0.5\n")
    with pytest.raises(sk.ConfigError) as err:
        sk.load_solver_spec(path)
    assert err.value.field == "momentum2" and err.value.line == 4
    assert str(path) in str(err.value)
    path.write_text(BASE + "lr_policy: step\nstepsize: ten\ngamma: 0.5\n")
    with pytest.raises(sk.ConfigError) as err:
        sk.load_solver_spec(path)
    assert err.value.field == "stepsize" and err.value.line == 4
    path.write_text(BASE + "type: AdamW\nregularization_type: L1\n")
    with pytest.raises(sk.ConfigError, match="AdamW decays weights itself") as err:
        sk.load_solver_spec(path)
    assert err.value.field == "regularization_type" and err.value.line == 4
