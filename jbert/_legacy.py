"""Old flat module names (`jbert.runtime`, `jbert.training`, ...) kept importable for one release.

Before 0.2 every stage was one module directly under `jbert/`. Users' scripts import those names
(`from jbert.runtime import OnnxClassifier`), so an import of an old name returns the module at its
new home, with a DeprecationWarning that names the new import. Nothing is copied: the old name and
the new one are the same module object. Remove in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings

# old name -> new home
LEGACY_MODULES = {
    "jbert.errors": "jbert.core.errors",
    "jbert.artifacts": "jbert.core.artifacts",
    "jbert.postprocessing": "jbert.core.postprocessing",
    "jbert.tabular": "jbert.core.readers",
    "jbert.text": "jbert.core.normalize",
    "jbert.fast_tokenizer": "jbert.tokenization",
    "jbert.tokenizer": "jbert.tokenization",
    "jbert.config": "jbert.train.config",
    "jbert.modeling": "jbert.train.modeling",
    "jbert.training": "jbert.train.loop",
    "jbert.checkpoint": "jbert.train.checkpoint",
    "jbert.launch": "jbert.train.launch",
    "jbert.metrics": "jbert.train.metrics",
    "jbert.reporting": "jbert.train.report",
    "jbert.exporting": "jbert.export",
    "jbert.export.exporting": "jbert.export",
    "jbert.runtime": "jbert.serve.runtime",
    "jbert.batching": "jbert.serve.batching",
    "jbert.scoring": "jbert.serve.scoring",
    "jbert.serving": "jbert.serve.http",
}


class _LegacyAliasLoader(importlib.abc.Loader):
    def __init__(self, new_name: str):
        self.new_name = new_name
        self.real_spec = None

    def create_module(self, spec):
        module = importlib.import_module(self.new_name)
        self.real_spec = module.__spec__
        return module

    def get_code(self, fullname):
        """The new module's code, so `python -m jbert.launch` still runs what `jbert.train.launch` runs."""
        return importlib.util.find_spec(self.new_name).loader.get_code(self.new_name)

    def exec_module(self, module):
        # The import system stamps the alias spec on the shared module object; give it back its own,
        # so tools that read __spec__ (reload, pickling by reference, coverage) see the real module.
        module.__spec__ = self.real_spec


class LegacyModuleFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder that answers old `jbert.<module>` names with their new modules."""

    def find_spec(self, fullname, path=None, target=None):
        """A spec whose loader returns the new module, or None for every other name."""
        new_name = LEGACY_MODULES.get(fullname)
        if new_name is None:
            return None
        warnings.warn(
            f"`{fullname}` moved to `{new_name}`; the old name works until jbert 0.3",
            DeprecationWarning,
            stacklevel=3,
        )
        return importlib.machinery.ModuleSpec(fullname, _LegacyAliasLoader(new_name))


def install() -> None:
    """Put the finder on `sys.meta_path` once (idempotent)."""
    if not any(isinstance(finder, LegacyModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(LegacyModuleFinder())
