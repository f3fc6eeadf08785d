"""Oasis (Decart/Etched open-oasis): a spatio-temporal DiT over a ViT VAE's latents, diffusion forcing."""

from engine.families import Family

FAMILY = Family(
    worlds={"oasis": "engine.families.oasis.world"},
    recipes={"oasis": "engine.families.oasis.recipe"},
    exports={"oasis": "engine.families.oasis.exports:world_exports"},
    benches={"minecraft": "engine.families.oasis.bench:bench"},
)
