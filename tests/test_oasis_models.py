"""Oasis DiT and ViT VAE against the open-oasis reference outputs (fixtures/oasis)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from engine.families.oasis.dit import OasisDiT
from engine.families.oasis.vae import OasisVAE
from tests.conftest import read_json

TOL = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(scope="module")
def dit(oasis_dir) -> OasisDiT:
    spec = read_json(oasis_dir / "dit.json")
    model = OasisDiT(**spec["kwargs"]).eval()
    missing, unexpected = model.load_state_dict(load_file(oasis_dir / "dit.safetensors"), strict=False)
    assert not unexpected
    assert set(missing) <= set(spec["shared_tensor_aliases_not_stored"])
    return model


@pytest.fixture(scope="module")
def vae(oasis_dir) -> OasisVAE:
    model = OasisVAE(**read_json(oasis_dir / "vae.json")["kwargs"]).eval()
    model.load_state_dict(load_file(oasis_dir / "vae.safetensors"), strict=True)
    return model


@pytest.mark.parametrize(("x", "t", "cond", "out"), [
    ("x", "t", "external_cond", "out"),
    ("x_t1", "t_t1", "external_cond_t1", "out_t1"),
    ("x", "t", None, "out_nocond"),
])
@torch.no_grad()
def test_dit_forward_matches_reference(dit, oasis_dir, x, t, cond, out):
    io = load_file(oasis_dir / "dit_io.safetensors")
    result = dit(io[x], io[t], io[cond] if cond else None)
    torch.testing.assert_close(result, io[out], **TOL)


@torch.no_grad()
def test_cached_forward_equals_full_window(dit, oasis_dir):
    io = load_file(oasis_dir / "dit_io.safetensors")
    x, t, cond = io["x"], io["t"], io["external_cond"]
    frames = x.shape[1]
    full = dit(x, t, cond)
    for split in range(1, frames):
        cache = dit.new_cache(x.shape[0], capacity=frames)
        head = dit.forward_cached(x[:, :split], t[:, :split], cond[:, :split], cache, 0)
        tail = dit.forward_cached(x[:, split:], t[:, split:], cond[:, split:], cache, split)
        torch.testing.assert_close(torch.cat((head, tail), dim=1), full, **TOL)
    newest = dit.forward_cached(x[:, -1:], t[:, -1:], cond[:, -1:], cache, frames - 1)
    torch.testing.assert_close(newest, full[:, -1:], **TOL)


@torch.no_grad()
def test_keys_only_pass_writes_the_same_cache(dit, oasis_dir):
    io = load_file(oasis_dir / "dit_io.safetensors")
    x, t, cond = io["x"], io["t"], io["external_cond"]
    full_cache, keys_cache = dit.new_cache(x.shape[0], x.shape[1]), dit.new_cache(x.shape[0], x.shape[1])
    dit.forward_cached(x, t, cond, full_cache, 0)
    assert dit.forward_cached(x, t, cond, keys_cache, 0, keys_only=True) is None
    torch.testing.assert_close(keys_cache.keys, full_cache.keys, rtol=0, atol=0)
    torch.testing.assert_close(keys_cache.values, full_cache.values, rtol=0, atol=0)


@torch.no_grad()
def test_vae_matches_reference(vae, oasis_dir):
    io = load_file(oasis_dir / "vae_io.safetensors")
    mean, logvar = vae.encode(io["x"])
    torch.testing.assert_close(mean, io["encode_mean"], **TOL)
    torch.testing.assert_close(logvar, io["encode_logvar"], **TOL)
    torch.testing.assert_close(vae.decode(io["z"]), io["decode_out"], **TOL)


def test_rotary_tables_stay_float32_under_reduced_precision(oasis_dir):
    dit = OasisDiT(**read_json(oasis_dir / "dit.json")["kwargs"])
    vae = OasisVAE(**read_json(oasis_dir / "vae.json")["kwargs"])
    exact = dit.spatial_rotary_emb.freqs.detach().clone()
    dit.to(torch.bfloat16)
    vae.to(torch.bfloat16)
    assert dit.spatial_rotary_emb.freqs.dtype == torch.float32
    assert torch.equal(dit.spatial_rotary_emb.freqs, exact)
    assert all(block.attn.rotary_angles.dtype == torch.float32 for block in vae.decoder)


def test_meta_build_allocates_nothing_and_materialises_exact_tables(oasis_dir):
    kwargs = read_json(oasis_dir / "dit.json")["kwargs"]
    with torch.device("meta"):
        dit = OasisDiT(**kwargs)
    assert all(p.device.type == "meta" for p in dit.parameters())
    dit.to_empty(device="cpu")
    torch.testing.assert_close(dit.temporal_rotary_emb.freqs, OasisDiT(**kwargs).temporal_rotary_emb.freqs,
                               rtol=0, atol=0)
