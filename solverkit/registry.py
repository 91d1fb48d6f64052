"""The layer registry: type name -> layer class (built-ins and plugins alike)."""

from __future__ import annotations

import importlib

from .errors import ConfigError, did_you_mean

_LAYERS: dict[str, type] = {}


def register_layer(type_name: str):
    """Class decorator: ``@register_layer("MyLayer")`` makes ``type: MyLayer`` usable.

    The class must derive from ``solverkit.layers.Layer`` and name its params model
    in ``Params`` (a ``solverkit.layers.LayerParams`` subclass; fields sit flat in YAML).
    """

    def decorate(cls):
        existing = _LAYERS.get(type_name)
        if existing is not None and existing is not cls and (
                existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ConfigError(f"layer type '{type_name}' is registered twice "
                              f"({existing.__module__}.{existing.__qualname__} and "
                              f"{cls.__module__}.{cls.__qualname__})")
        cls.type = type_name
        _LAYERS[type_name] = cls
        return cls

    return decorate


def _load_builtins() -> None:
    from . import layers  # noqa: F401  (importing registers the built-in layers)


def layer_class(type_name: str) -> type:
    """The class registered under ``type_name``; a ConfigError listing the known ones if none."""
    _load_builtins()
    try:
        return _LAYERS[type_name]
    except KeyError:
        raise ConfigError(f"unknown layer type '{type_name}'{did_you_mean(type_name, _LAYERS)}; "
                          f"known types: {', '.join(sorted(_LAYERS))}", field="type") from None


def layer_types() -> dict[str, type]:
    """Every registered type name and its class."""
    _load_builtins()
    return dict(_LAYERS)


def import_plugins(modules) -> None:
    """Import each plugin module so its ``@register_layer`` classes are known.

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
        except (Exception, SystemExit) as err:     # the plugin's own code failed
            raise ConfigError(f"cannot import plugin module '{name}': {_first_line(err)}",
                              field="plugins") from None


def _first_line(err: BaseException) -> str:
    if isinstance(err, SyntaxError) and err.filename:
        return f"SyntaxError: {err.msg} ({err.filename}, line {err.lineno})"
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__
