"""The registries: layer types, update rules, learning-rate policies and callbacks by name.

Built-ins and plugins register alike (``@register_layer``, ``@register_update``,
``@register_policy``, ``@register_callback``); a spec names them by ``type`` /
``lr_policy`` (a solver's ``callbacks:`` entries by ``type``) and lists the plugin
modules that define new ones under ``plugins``. A name registered twice by two different
definitions is an error naming both.

This module imports none of the things it registers: the built-ins register themselves
when their modules are imported, which ``import solverkit`` does (``solverkit.layers``,
``solverkit.solvers``).
"""

from __future__ import annotations

import importlib

from .errors import ConfigError, did_you_mean

_LAYERS: dict[str, type] = {}
_UPDATES: dict[str, type] = {}
_POLICIES: dict[str, object] = {}
_CALLBACKS: dict[str, type] = {}


def _same(existing, new) -> bool:
    """The same object, or the same definition imported again (a module reloaded)."""
    return existing is new or (getattr(existing, "__module__", None),
                               getattr(existing, "__qualname__", None)) == (
        getattr(new, "__module__", None), getattr(new, "__qualname__", None))


def _register(table: dict, what: str, name: str, obj) -> None:
    existing = table.get(name)
    if existing is not None and not _same(existing, obj):
        raise ConfigError(f"{what} '{name}' is registered twice "
                          f"({existing.__module__}.{existing.__qualname__} and "
                          f"{obj.__module__}.{obj.__qualname__})")
    table[name] = obj


def register_layer(type_name: str):
    """Class decorator: ``@register_layer("MyLayer")`` makes ``type: MyLayer`` usable.

    The class must derive from ``solverkit.layers.Layer`` and name its params model
    in ``Params`` (a ``solverkit.layers.LayerParams`` subclass; fields sit flat in YAML).
    """

    def decorate(cls):
        _register(_LAYERS, "layer type", type_name, cls)
        cls.type = type_name
        return cls

    return decorate


def register_update(type_name: str):
    """Class decorator: ``@register_update("Lion")`` makes ``type: Lion`` usable in a solver.

    The class derives from ``solverkit.UpdateRule`` and names its own solver fields (with
    their defaults) in ``Params``, a subclass of ``UpdateRule.Params``.
    """

    def decorate(cls):
        _register(_UPDATES, "update type", type_name, cls)
        cls.type = type_name
        return cls

    return decorate


def register_policy(name: str, params=None):
    """Decorator: ``@register_policy("halving")`` makes ``lr_policy: halving`` usable.

    It takes either a function ``rate(base_lr, it, spec)`` (``spec``: the solver spec, whose
    fields it reads) or a class deriving from ``solverkit.solvers.schedule.Policy`` (a
    policy with state: ``rate(it)``, ``get_state``/``set_state``, callback hooks).
    ``params`` (or the class's ``Params``) is a pydantic model of the policy's own solver
    fields: they are then checked like an update type's (required, unused, defaults).
    Without one, the policy takes any of the known policy fields, none required.
    """

    def decorate(obj):
        if params is not None:
            obj.Params = params
        _register(_POLICIES, "lr_policy", name, obj)
        obj.policy_name = name
        return obj

    return decorate


def register_callback(type_name: str):
    """Class decorator: ``@register_callback("CountTests")`` makes ``callbacks: [{type:
    CountTests}]`` usable in a solver spec.

    The class derives from ``solverkit.Callback`` and names its own fields (with their
    defaults) in ``Params``, a subclass of ``Callback.Params``; the solver constructs it
    as ``cls(params)`` and saves its ``get_state()`` in every solver state.
    """

    def decorate(cls):
        _register(_CALLBACKS, "callback type", type_name, cls)
        cls.type = type_name
        return cls

    return decorate


def _lookup(table: dict, name: str, what: str, field: str):
    try:
        return table[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown {what} '{name}'{did_you_mean(name, table)}; "
                          f"known: {', '.join(sorted(table))}", field=field) from None


def layer_class(type_name: str) -> type:
    """The class registered under ``type_name``; a ConfigError listing the known ones if none."""
    try:
        return _LAYERS[type_name]
    except KeyError:
        raise ConfigError(f"unknown layer type '{type_name}'{did_you_mean(type_name, _LAYERS)}; "
                          f"known types: {', '.join(sorted(_LAYERS))}", field="type") from None


def layer_types() -> dict[str, type]:
    """Every registered type name and its class."""
    return dict(_LAYERS)


def update_class(type_name: str) -> type:
    """The update rule registered under ``type_name`` (a ConfigError with did-you-mean if none)."""
    return _lookup(_UPDATES, type_name, "solver type", "type")


def update_types() -> dict[str, type]:
    """Every registered update type and its class, in registration order."""
    return dict(_UPDATES)


def policy(name: str):
    """The lr policy registered under ``name`` (a ConfigError with did-you-mean if none)."""
    return _lookup(_POLICIES, name, "lr_policy", "lr_policy")


def policies() -> dict[str, object]:
    """Every registered lr policy, in registration order."""
    return dict(_POLICIES)


def callback_class(type_name: str) -> type:
    """The callback registered under ``type_name`` (a ConfigError with did-you-mean if none)."""
    return _lookup(_CALLBACKS, type_name, "callback type", "type")


def callback_types() -> dict[str, type]:
    """Every registered callback type and its class, in registration order."""
    return dict(_CALLBACKS)


def import_plugins(modules) -> None:
    """Import each plugin module so its registered layers, rules, policies and callbacks
    are known.

    A plugin is a module name (``my_layers`` or ``pkg.layers``, found on ``sys.path``);
    one that cannot be imported — missing, a syntax error, or raising anything while it
    runs — is a ConfigError naming the plugin and the first line of the error.
    """
    for module in modules or ():
        name = str(module).strip() if isinstance(module, str) else module
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a plugin must be a module name, got {module!r}", field="plugins")
        if "/" in name or "\\" in name or name.endswith(".py"):
            stem = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].removesuffix(".py")
            raise ConfigError(f"plugin '{module}' is a path; give a module name instead "
                              f"(e.g. '{stem or 'my_layers'}', with its folder on PYTHONPATH)",
                              field="plugins")
        try:
            importlib.import_module(name)
        except ConfigError:
            raise
        except (Exception, SystemExit) as err:  # noqa: BLE001  (any failure of the plugin's own code)
            raise ConfigError(f"cannot import plugin module '{name}': {_first_line(err)}",
                              field="plugins") from None


def _first_line(err: BaseException) -> str:
    if isinstance(err, SyntaxError) and err.filename:
        return f"SyntaxError: {err.msg} ({err.filename}, line {err.lineno})"
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__
