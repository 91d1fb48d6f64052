"""Which nets a solver builds: Caffe's ``net``/``net_param``, ``train_net``/``train_net_param``,
``test_net``/``test_net_param`` lists, ``test_iter`` per test net and the ``train_state`` and
``test_state`` (stage, level) each net is built in.

The training net comes from exactly one of ``train_net``, ``train_net_param``, ``net`` and
``net_param`` (or the command line's ``--net``, which stands for ``net``). The test nets are
every ``test_net`` file, then every ``test_net_param``; without either, the general net
serves as many test nets as ``test_state`` (or a ``test_iter`` list) has entries, at least
one. File paths are relative to the solver file; so are data sources of an inline net.
The first test net's outputs keep their names; test net ``i >= 1`` prefixes its outputs
with ``test<i>/`` (``test1/accuracy``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..spec.net import load_net_spec
from ..spec.solver_fields import SolverSpec
from ..spec.training import NetState


@dataclass
class NetPlan:
    """One net to build: its source (a path or a NetSpec), phase, state and test_iter."""

    source: object
    phase: str
    state: NetState = field(default_factory=NetState)
    test_iter: int | None = None
    field: str = "net"              # the solver field it came from, for messages

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(self.state.stage)

    @property
    def level(self) -> int:
        return self.state.level


def output_prefix(index: int) -> str:
    """How test net ``index``'s outputs are named in logs: ``""`` for the first, ``test<i>/``."""
    return "" if index == 0 else f"test{index}/"


def _path(spec: SolverSpec, name: str, value: str) -> Path:
    path = spec.resolve(value)
    if not os.path.lexists(path):      # a broken link: reading it names the problem
        raise ConfigError(f"net file not found: {path} (a relative path is relative to the "
                          f"solver file)", file=spec.file, line=spec.line_of(name), field=name)
    return path


def _inline(spec: SolverSpec, name: str, value: dict):
    net_spec = load_net_spec(value)
    if net_spec._source is not None:
        net_spec._source.base_dir = spec.base_dir
        net_spec._source.file = net_spec._source.file or f"{spec.file or 'solver'}:{name}"
    return net_spec


def plan_nets(spec: SolverSpec, net=None,
              stage_override: tuple[list[str], int] | None = None) -> tuple[NetPlan, list[NetPlan]]:
    """The training net's plan and the test nets' plans (the solver builds test nets
    when it first tests). ``net`` is the command line's net; ``stage_override``
    (stages, level) replaces ``train_state`` (``--stage``/``--level``)."""
    given = [name for name in ("train_net", "train_net_param", "net", "net_param")
             if getattr(spec, name) is not None]
    if net is not None:
        given = [name for name in given if name not in ("net", "net_param")]
    if len(given) > 1:
        raise ConfigError(f"give one of train_net, train_net_param, net and net_param, not "
                          f"{' and '.join(given)}", file=spec.file, line=spec.line_of(given[1]),
                          field=given[1])
    general = None
    if net is not None:
        general = (net, "--net")
    elif spec.net is not None:
        general = (_path(spec, "net", spec.net), "net")
    elif spec.net_param is not None:
        general = (_inline(spec, "net_param", spec.net_param), "net_param")
    if spec.train_net is not None:
        train_source, train_field = _path(spec, "train_net", spec.train_net), "train_net"
    elif spec.train_net_param is not None:
        train_source = _inline(spec, "train_net_param", spec.train_net_param)
        train_field = "train_net_param"
    elif general is not None:
        train_source, train_field = general
    else:
        raise ConfigError("no net given: set 'net:' in the solver spec or pass --net",
                          file=spec.file, field="net")
    train_state = spec.train_state
    if stage_override is not None:
        train_state = NetState(stage=list(stage_override[0]), level=stage_override[1])
    train = NetPlan(train_source, "TRAIN", train_state, field=train_field)
    for name, states, phase in (("train_state", [spec.train_state], "TRAIN"),
                                ("test_state", spec.test_state, "TEST")):
        if any(state.phase not in (None, phase) for state in states):
            raise ConfigError(f"{name} is for {phase} nets: its phase must be {phase} or "
                              f"left out", file=spec.file, line=spec.line_of(name), field=name)

    sources = [(_path(spec, "test_net", p), "test_net") for p in spec.test_net]
    sources += [(_inline(spec, "test_net_param", p), "test_net_param")
                for p in spec.test_net_param]
    iters = spec.test_iter if isinstance(spec.test_iter, list) else None
    if not sources:
        if general is None:
            if spec.test_interval <= 0:
                return train, []
            raise ConfigError("no test net: give test_net (or net/net_param, which serves "
                              "both phases)", file=spec.file, field="test_net")
        count = len(spec.test_state) or (len(iters) if iters is not None else 1)
        sources = [general] * count
    count = len(sources)
    if spec.test_state and len(spec.test_state) != count:
        raise ConfigError(f"test_state has {len(spec.test_state)} entries for {count} test "
                          f"nets (one each)", file=spec.file, line=spec.line_of("test_state"),
                          field="test_state")
    if iters is not None and len(iters) != count:
        raise ConfigError(f"test_iter has {len(iters)} entries for {count} test nets (one "
                          f"each, or one number for all)", file=spec.file,
                          line=spec.line_of("test_iter"), field="test_iter")
    tests = []
    for i, (source, name) in enumerate(sources):
        state = spec.test_state[i] if spec.test_state else NetState()
        count_i = iters[i] if iters is not None else spec.test_iter
        tests.append(NetPlan(source, "TEST", state, count_i, field=name))
    return train, tests
