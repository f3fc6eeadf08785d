"""The Oasis DiT calls of a tick in static shapes, so they can be compiled, captured and exported once.

`CachedDiffusionForcing` slices its temporal key/value cache to the frames seen so far, so its shapes
change every tick while the window fills. Here window positions are a tensor: frames at `positions`
write their keys/values into those slots of the full-capacity cache and attend over the slots up to
their own through a mask, so every call has the same shapes from the first tick on. Two units, shared
by the compiled/captured backends, the ONNX export and TensorRT:

- `context(x, t, action, keys, values, positions)`: context frames -> their keys and values
  (depth, B*h*w, heads, T, head_dim), also written into the cache. With T = capacity - 1 at positions
  0 .. T-1 it is the prefill after the window slides; with T = 1 the frame-by-frame fill after a reset.
- `step(x, mods, keys, values, position)`: one denoising step of the newest frame, its adaLN
  modulations precomputed for the whole tick (`pack_modulations`) -> the v-prediction. Its keys/values
  land in slot `position`, scratch space that the next `context` call overwrites (as in the eager sampler).

Each DiT block runs as one function (`block`, or `block_keys` for the last block of a context call),
which `compile` may replace: torch.compile then builds one graph per block shape, shared by all blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from engine.families.oasis.dit import DiTBlock, Modulations, OasisDiT, layer_norm, modulate
from engine.families.oasis.rotary import pair_angles, rotation_table

CHUNKS_PER_BLOCK = 12  # adaLN shift, scale, gate x 2 (attention, MLP) x 2 (spatial, temporal)
Chunks = tuple[torch.Tensor, ...]
Compile = Callable[[Callable, str], Callable]


def pack_modulations(mods: Modulations) -> torch.Tensor:
    """All adaLN chunks of `mods` in one tensor (B, T, 1, 1, (12 * depth + 2) * D), block by block."""
    chunks = [c for spatial, temporal in mods.blocks for c in (*spatial, *temporal)]
    return torch.cat([*chunks, *mods.final], dim=-1)


def unpack_modulations(packed: torch.Tensor, depth: int) -> Modulations:
    """The inverse of `pack_modulations` (views, no copies)."""
    chunks = packed.chunk(CHUNKS_PER_BLOCK * depth + 2, dim=-1)
    blocks = [(chunks[i : i + 6], chunks[i + 6 : i + 12]) for i in range(0, CHUNKS_PER_BLOCK * depth, 12)]
    return Modulations(blocks, chunks[-2:])


def temporal_qkv(block: DiTBlock, x: torch.Tensor, mods: Chunks,
                 rope: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """q, k, v of the temporal sub-block, each (B*h*w, heads, T, head_dim)."""
    b, t, h, w, _ = x.shape
    q, k, v = block.t_attn.project(modulate(layer_norm(x), mods[0], mods[1]), rope)
    return tuple(z.permute(0, 2, 3, 4, 1, 5).reshape(b * h * w, block.t_attn.heads, t, -1) for z in (q, k, v))


def block(dit_block: DiTBlock, x: torch.Tensor, s_mods: Chunks, t_mods: Chunks,
          s_rope: tuple[torch.Tensor, torch.Tensor], t_rope: tuple[torch.Tensor, torch.Tensor],
          keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """One DiT block for frames x (B, T, h, w, D) at `positions` against one layer's cache (N, heads, S, hd).

    `DiTBlock.temporal` with a cache, except that the frames' keys/values go to tensor positions and
    the queries see the whole cache through `visible` (T, S) instead of a slice of it.
    """
    b, t, h, w, d = x.shape
    x = dit_block.spatial(x, s_mods, s_rope)
    q, k, v = temporal_qkv(dit_block, x, t_mods, t_rope)
    keys.index_copy_(2, positions, k)
    values.index_copy_(2, positions, v)
    attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible)
    heads = dit_block.t_attn.heads
    attn = attn.reshape(b, h, w, heads, t, -1).permute(0, 4, 1, 2, 3, 5).reshape(b, t, h, w, d)
    x = x + t_mods[2] * dit_block.t_attn.to_out(attn)
    return x + t_mods[5] * dit_block.t_mlp(modulate(layer_norm(x), t_mods[3], t_mods[4]))


def block_keys(dit_block: DiTBlock, x: torch.Tensor, s_mods: Chunks, t_mods: Chunks,
               s_rope: tuple[torch.Tensor, torch.Tensor], t_rope: tuple[torch.Tensor, torch.Tensor],
               keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor) -> None:
    """The part of `block` that the cache needs: the frames' keys and values, written at `positions`."""
    x = dit_block.spatial(x, s_mods, s_rope)
    _, k, v = temporal_qkv(dit_block, x, t_mods, t_rope)
    keys.index_copy_(2, positions, k)
    values.index_copy_(2, positions, v)


def _as_is(fn: Callable, name: str) -> Callable:
    return fn


class OasisUnits(nn.Module):
    """The static-shape Oasis calls of one tick for a cache of `capacity` frames (see the module doc)."""

    def __init__(self, dit: OasisDiT, capacity: int, compile: Compile = _as_is) -> None:
        super().__init__()
        self.dit = dit
        self.capacity = capacity
        angles = pair_angles(torch.arange(capacity, device=dit.device), dit.temporal_rotary_emb.freqs)
        cos, sin = rotation_table(angles, dit.dtype)
        self.register_buffer("temporal_cos", cos, persistent=False)
        self.register_buffer("temporal_sin", sin, persistent=False)
        self.register_buffer("slots", torch.arange(capacity, device=dit.device), persistent=False)
        self._block = compile(block, "dit_block")
        self._block_keys = compile(block_keys, "dit_block_keys")

    def prefill(self, x: torch.Tensor, t: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`context` for frames (B, S, C, H, W) at positions 0 .. S-1 into a fresh cache."""
        cache = self.dit.new_cache(x.shape[0], self.capacity)
        return self.context(x, t, action, cache.keys, cache.values, self.slots[: x.shape[1]])

    def write_context(self, x: torch.Tensor, t: torch.Tensor, action: torch.Tensor, keys: torch.Tensor,
                      values: torch.Tensor, positions: torch.Tensor) -> None:
        """Context frames (B, T, C, H, W) at `positions` (T,): their keys/values written into the cache."""
        self._frames(x, self.dit.modulations(t, action), keys, values, positions, keys_only=True)

    def context(self, x: torch.Tensor, t: torch.Tensor, action: torch.Tensor, keys: torch.Tensor,
                values: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`write_context`, returning the frames' keys, values (depth, B*h*w, heads, T, hd)."""
        self.write_context(x, t, action, keys, values, positions)
        return keys.index_select(3, positions), values.index_select(3, positions)

    def step(self, x: torch.Tensor, mods: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
             position: torch.Tensor) -> torch.Tensor:
        """Newest frame (B, 1, C, H, W) at `position` (1,), packed modulations (B, 1, 1, 1, M) -> v-prediction."""
        return self._frames(x, unpack_modulations(mods, self.dit.depth), keys, values, position, keys_only=False)

    def _frames(self, x: torch.Tensor, mods: Modulations, keys: torch.Tensor, values: torch.Tensor,
                positions: torch.Tensor, keys_only: bool) -> torch.Tensor | None:
        dit = self.dit
        tokens = dit.patchify(x)
        s_rope = rotation_table(dit.spatial_angles()[:, :, None, None], tokens.dtype)
        t_rope = tuple(table.index_select(0, positions)[:, None, None, None, None]
                       for table in (self.temporal_cos, self.temporal_sin))
        visible = self.slots[None, :] <= positions[:, None]  # (T, capacity): causal over the window
        blocks = list(zip(dit.blocks, mods.blocks, strict=True))
        if keys_only:
            *blocks, (last, (s_mods, t_mods)) = blocks
        for i, (dit_block, (s_mods_i, t_mods_i)) in enumerate(blocks):
            tokens = self._block(dit_block, tokens, s_mods_i, t_mods_i, s_rope, t_rope, keys[i], values[i],
                                 positions, visible)
        if keys_only:
            self._block_keys(last, tokens, s_mods, t_mods, s_rope, t_rope, keys[-1], values[-1], positions)
            return None
        return dit.unpatchify(dit.final_layer(tokens, mods.final))
