"""The ``agent-client-protocol`` models, imported when first used.

Importing ``acp.schema`` builds hundreds of pydantic models (~9 MB of the daemon's RSS);
a daemon with no agent running never needs them. Modules write
``if TYPE_CHECKING: from acp import schema`` / ``else: schema = lazy_module("acp.schema")``
so the type checker sees the real module and the import waits for the first attribute.
"""

from __future__ import annotations

import importlib
from typing import Any


class _LazyModule:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        # import_module is a dict lookup once the module is in sys.modules.
        return getattr(importlib.import_module(self._name), attr)


def lazy_module(name: str) -> Any:
    return _LazyModule(name)
