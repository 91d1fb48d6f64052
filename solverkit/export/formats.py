"""Export formats: the registry of exporters, chosen by the output file's suffix.

An exporter is a function ``export(net, path)`` registered with
``@register_exporter(name, suffixes=[...])``: ``net`` is the deploy Net with the trained
weights loaded, ``path`` a temporary file beside the output (``files.atomic_path``), moved into place with
the umask's mode only when ``export`` returns; on an error it is removed. A format that
writes more than one file derives from ``Exporter`` and names them in ``outputs``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from ..errors import ConfigError
from ..files import atomic_path
from ..registry import _register

_EXPORTERS: dict[str, type[Exporter]] = {}


class Exporter:
    """One export format. ``export(net, path)`` writes the file; ``outputs(path)`` lists
    every file an export to ``path`` writes (each is refused if it exists, unless forced);
    ``check_available()`` fails early, before the net is built, when a library is missing."""

    name: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()

    def check_available(self) -> None:
        """Raise a ConfigError naming the extra when this format's library is missing."""

    def outputs(self, path: Path) -> list[Path]:
        return [path]

    def export(self, net, path: Path) -> None:
        """Write ``net`` to ``path`` (what each exporter defines)."""
        raise NotImplementedError

    def write(self, net, path: Path) -> list[Path]:
        """Export ``net`` to ``path`` through a temporary file; the files written."""
        with atomic_path(path, operation=f"export to {self.name}") as temporary:
            self.export(net, temporary)
        return [path]


class FunctionExporter(Exporter):
    """An exporter registered as one function ``export(net, path)``."""

    function: ClassVar[Callable] = None

    def export(self, net, path: Path) -> None:
        type(self).function(net, path)


def register_exporter(name: str, suffixes=()):
    """Decorator: ``@register_exporter("shapes", suffixes=[".shapes"])`` makes ``solverkit
    export ... -o model.shapes`` write with it. On a function ``export(net, path)``, or on
    an ``Exporter`` subclass. A name or suffix that is taken is an error naming both."""
    def decorate(obj):
        if isinstance(obj, type) and issubclass(obj, Exporter):
            cls = obj
        else:
            cls = type(name, (FunctionExporter,), {"function": staticmethod(obj),
                                                   "__doc__": obj.__doc__,
                                                   "__module__": obj.__module__})
            cls.__qualname__ = obj.__qualname__
        wanted = tuple(s.lower() for s in (suffixes or cls.suffixes))
        if not wanted or not all(s.startswith(".") for s in wanted):
            raise ConfigError(f"exporter '{name}' needs suffixes such as ['.{name}']")
        for suffix in wanted:
            taken = _by_suffix().get(suffix)
            if taken is not None and taken.name != name:
                raise ConfigError(f"suffix '{suffix}' of exporter '{name}' "
                                  f"({cls.__module__}.{cls.__qualname__}) is taken by exporter "
                                  f"'{taken.name}' ({taken.__module__}.{taken.__qualname__})")
        _register(_EXPORTERS, "exporter", name, cls)
        cls.name = name
        cls.suffixes = wanted
        return obj
    return decorate


def exporters() -> dict[str, type[Exporter]]:
    """Every registered exporter, in registration order."""
    return dict(_EXPORTERS)


def _by_suffix() -> dict[str, type[Exporter]]:
    return {suffix: cls for cls in _EXPORTERS.values() for suffix in cls.suffixes}


def exporter_for(path) -> Exporter:
    """The exporter of ``path``'s suffix; a ConfigError listing the known suffixes if none."""
    path = Path(path)
    known = _by_suffix()
    name = path.name.lower()
    for suffix in sorted(known, key=len, reverse=True):     # '.tar.gz' before '.gz'
        if name.endswith(suffix) and len(name) > len(suffix):
            return known[suffix]()
    raise ConfigError(f"cannot tell the export format from '{path.name}': name the output "
                      f"{' or '.join('*' + s for s in known)}")
