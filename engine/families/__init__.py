"""World families: config `family:` -> the module that knows its networks and opens its sessions.

Each module defines `NETWORKS: dict[str, type[nn.Module]]` (checkpoint role -> class) and
`open_world(cfg, networks, options) -> Session`. Imported lazily so a world only pulls in its own code.
"""

from __future__ import annotations

import importlib
from types import ModuleType

FAMILY_MODULES: dict[str, str] = {
    "oasis": "engine.families.oasis.world",
    "csgo": "engine.families.diamond.csgo",
    "atari": "engine.families.diamond.atari",
    "worldmar": "engine.families.worldmar.world",
}


def family_module(family: str) -> ModuleType:
    return importlib.import_module(FAMILY_MODULES[family])
