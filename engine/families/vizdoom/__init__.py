"""The real Doom (ViZDoom + Freedoom from PyPI) as a world: the ground truth and the data of the Doom world model."""

from engine.families import Family

FAMILY = Family(
    worlds={"doom-game": "engine.families.vizdoom.world"},
    collectors={"doom-game": "engine.families.vizdoom.collect:main"},
    schemas={"doom-game": "engine.families.vizdoom.schema:DoomGameWorld"},
)
