"""Oasis (Decart/Etched open-oasis): a spatio-temporal DiT over a ViT VAE's latents, diffusion forcing; its
recipes train the DiT (`oasis`) and the VAE (`oasis_vae`)."""

from engine.families import Family

FAMILY = Family(
    worlds={"oasis": "engine.families.oasis.world"},
    recipes={"oasis": "engine.families.oasis.recipe", "oasis_vae": "engine.families.oasis.vae_recipe"},
    exports={"oasis": "engine.families.oasis.exports:world_exports"},
    benches={"minecraft": "engine.families.oasis.bench:bench"},
    schemas={"oasis": "engine.families.oasis.schema:OasisWorld"},
    train_schemas={"oasis": "engine.families.oasis.schema:OasisTraining",
                   "oasis_vae": "engine.families.oasis.vae_schema:OasisVAETraining"},
)
