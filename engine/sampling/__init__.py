"""Samplers: diffusion forcing (Oasis), EDM (DIAMOND), masked autoregression (WorldMAR)."""
