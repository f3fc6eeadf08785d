"""WorldMAR (nwrousell/world-mar): a masked autoregressive ST transformer with a pose-retrieved memory."""

from engine.families import Family

FAMILY = Family(
    worlds={"worldmar": "engine.families.worldmar.world"},
    recipes={"worldmar": "engine.families.worldmar.recipe"},
    exports={"worldmar": "engine.families.worldmar.exports:world_exports"},
    benches={"minecraft-mar": "engine.families.worldmar.bench:bench"},
    schemas={"worldmar": "engine.families.worldmar.schema:WorldMARWorld"},
    train_schemas={"worldmar": "engine.families.worldmar.schema:WorldMARTraining"},
)
