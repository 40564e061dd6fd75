"""Built-in strategies. Every module here registers itself on import (one file per strategy)."""
import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
