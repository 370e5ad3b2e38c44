"""One module per layer kind, each registering a :class:`~bitloom.plan.kind.LayerKind`:
what planning, the cost model, the hardware core and the HLS emitter need to know about
that kind, side by side. Importing this package (the facade does) imports every module in
it, so a new kind is a new module here and nothing to list."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
