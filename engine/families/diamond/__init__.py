"""DIAMOND (Alonso et al. 2024, eloialonso/diamond): EDM U-Net world models of Atari-100k games and CS:GO."""

from engine.families import Family

FAMILY = Family(
    worlds={"atari": "engine.families.diamond.atari", "csgo": "engine.families.diamond.csgo"},
    recipes={"diamond": "engine.families.diamond.recipe"},
    exports={"atari": "engine.families.diamond.exports:atari_exports",
             "csgo": "engine.families.diamond.exports:csgo_exports"},
    benches={"atari": "engine.families.diamond.bench:bench_atari", "csgo": "engine.families.diamond.bench:bench_csgo"},
    collectors={"atari": "engine.families.diamond.collect_atari:main"},
    schemas={"atari": "engine.families.diamond.schema:AtariWorld", "csgo": "engine.families.diamond.schema:CsgoWorld"},
    train_schemas={"diamond": "engine.families.diamond.schema:DiamondTraining"},
)
