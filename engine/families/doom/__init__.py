"""The project's own world: a small pose-memory world model of Freedoom's E1M1, trained on the real game."""

from engine.families import Family

FAMILY = Family(
    worlds={"doom": "engine.families.doom.world"},
    recipes={"doom": "engine.families.doom.recipe"},
    benches={"doom": "engine.families.doom.bench:bench"},
    schemas={"doom": "engine.families.doom.schema:DoomWorld"},
    train_schemas={"doom": "engine.families.doom.schema:DoomTraining"},
)
