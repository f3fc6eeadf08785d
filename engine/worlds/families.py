"""World families: config `family:` -> the module that knows its networks and opens its sessions.

Each module defines `NETWORKS: dict[str, type[nn.Module]]` (checkpoint role -> class) and
`open_world(cfg, networks, options) -> Session`. Imported lazily so a world only pulls in its own code.
"""

from __future__ import annotations

import importlib
from types import ModuleType

FAMILY_MODULES: dict[str, str] = {
    "oasis": "engine.worlds.oasis",
    "csgo": "engine.worlds.csgo",
    "atari": "engine.worlds.atari",
    "worldmar": "engine.worlds.worldmar",
}


def family_module(family: str) -> ModuleType:
    return importlib.import_module(FAMILY_MODULES[family])
