"""Models (and their configs' types) from outside noderun's package: every module named by an entry point
of the group `noderun.plugins` is imported once, before any config is composed, in the `noderun` and
`noderun-report` commands and in every job process. Such a module adds its model to the registries
as noderun's own models are added (`MODELS[name] = ModelEntry(...)`, its dataclass in
`schema.SCHEMAS["model"]` and `schema.register()`); its YAML sits in a config folder the command puts on
Hydra's search path (`hydra.searchpath=[file://DIR]`). README, "Adding a model"."""

from __future__ import annotations

from importlib.metadata import entry_points

from noderun.errors import UserError

GROUP = "noderun.plugins"
_loaded: list[str] | None = None


def load_plugins() -> list[str]:
    """Import each module the installed distributions name under the entry-point group `noderun.plugins`
    (once per process); return their names. A module that fails to import is a UserError naming it."""
    global _loaded
    if _loaded is not None:
        return list(_loaded)
    _loaded = []
    for point in sorted(entry_points(group=GROUP), key=lambda p: p.name):
        try:
            point.load()
        except Exception as err:  # noqa: BLE001  (any error of someone else's module: said in one line)
            raise UserError(f"the noderun plugin {point.name!r} ({point.value}) failed to load: "
                            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
        _loaded.append(point.name)
    return list(_loaded)
