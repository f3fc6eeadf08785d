"""WorldMAR model, diffusion head and MAR sampler against the reference fixtures (fixtures/worldmar):
every size comes from model_small.json / the tensors, every random draw is replayed."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.checkpoints.loading import alias_groups, check_module, state_shapes
from engine.core.noise import ReplayNoise, SeededNoise
from engine.errors import CheckpointError
from engine.families.worldmar.blocks import AttentionDropout
from engine.families.worldmar.conditioning import frame_timestamps, plucker_tokens
from engine.families.worldmar.diffusion import space_timesteps
from engine.families.worldmar.mar import MARSampler, MARSettings, ddim_trajectory, reveal_schedule
from engine.families.worldmar.masks import (
    mask_from_orders,
    masked_counts,
    padding_mask,
    token_validity,
    truncated_mask_rate,
    with_buffer_row,
)
from engine.families.worldmar.model import (
    SCALE_FACTOR,
    LossTerms,
    TrainingDraws,
    WorldMAR,
    load_reference_checkpoint,
    reference_state_dict,
)
from tests.conftest import read_json

EMB_TOL = {"atol": 1e-4, "rtol": 1e-4}
HEAD_TOL = {"atol": 1e-5, "rtol": 0}


def build(mar_config: dict, reference_compat: bool = True, device: str = "meta") -> WorldMAR:
    with torch.device(device):
        return WorldMAR.from_reference_kwargs(mar_config["constructor_kwargs"], reference_compat=reference_compat)


@pytest.fixture(scope="module")
def model(mar_config: dict, mar_dir: Path) -> WorldMAR:
    net = build(mar_config)
    net.to_empty(device="cpu")
    load_reference_checkpoint(net, mar_dir / "model_small.safetensors")
    return net.eval()


def inputs(mar_io: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return mar_io["in_x_raw"], mar_io["in_actions"], mar_io["in_poses_sub"], mar_io["in_timestamps"], mar_io["in_batch_nframes"]


def frames(mar_io: dict[str, torch.Tensor]) -> int:
    return mar_io["in_x_raw"].shape[1]


def buffered(mask: torch.Tensor, model: WorldMAR) -> torch.Tensor:
    return with_buffer_row(mask, model.grid[1])


# ----- structure and checkpoints -----


def test_state_dict_matches_fixture_layout(model: WorldMAR, mar_config: dict):
    assert state_shapes(model) == {k: tuple(v) for k, v in mar_config["state_dict"].items()}
    assert sorted(alias_groups(model)) == sorted(sorted(g) for g in mar_config["aliased_state_dict_keys"])
    unique = {p.data_ptr(): p.numel() for p in model.parameters()}
    assert sum(unique.values()) == mar_config["param_count_unique"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == mar_config["param_count_trainable"]
    assert model.grid == (mar_config["derived"]["seq_h"], mar_config["derived"]["seq_w"])
    assert model.token_dim == mar_config["derived"]["token_embed_dim"]


def test_full_size_manifest_on_meta(mar_dir: Path):
    manifest = read_json(mar_dir / "manifest_world_mar_l.json")
    net = build({"constructor_kwargs": manifest["constructor_kwargs"]})
    assert state_shapes(net) == {k: tuple(v) for k, v in manifest["state_dict"].items()}
    assert len(net.state_dict()) == manifest["state_dict_num_entries"]
    assert sorted(alias_groups(net)) == sorted(sorted(g) for g in manifest["aliased_keys"])
    frozen = {k for k, v in net.state_dict(keep_vars=True).items() if not v.requires_grad}
    assert frozen == set(manifest["frozen_keys"])
    assert sum(p.numel() for p in net.parameters()) == manifest["param_count_unique"]
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == manifest["param_count_trainable"]
    vae_keys = {"vae.encoder.0.attn.qkv.weight": [3072, 1024], "vae.dec_norm.bias": [1024]}
    with_vae = {**manifest["state_dict"], **vae_keys}
    assert check_module(net, reference_state_dict(with_vae)).ok


def lightning_checkpoint(state: dict[str, torch.Tensor], prefix: str = "") -> dict:
    """What the reference trainer's ModelCheckpoint writes: a Lightning dict with the frozen VAE inside."""
    weights = {prefix + k: v for k, v in state.items()}
    weights.update({f"{prefix}vae.encoder.0.attn.qkv.weight": torch.zeros(6, 4),
                    f"{prefix}vae.post_quant_conv.bias": torch.zeros(4)})
    return {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "2.5.1", "state_dict": weights,
            "loops": {"fit_loop": {"state_dict": {},
                                   "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
                "monitor": "val_loss", "best_model_score": torch.tensor(0.61),
                "dirpath": "logs/run/checkpoints",
                "best_k_models": {"logs/run/checkpoints/epochepoch=02.ckpt": torch.tensor(0.61)}}},
            "optimizer_states": [{"state": {0: {"step": torch.tensor(1200.0)}},
                                  "param_groups": [{"lr": 5e-5, "betas": (0.9, 0.999), "params": [0]}]}],
            "lr_schedulers": [{"_milestones": [], "last_epoch": 1200, "_last_lr": [5e-5]}]}


@pytest.mark.parametrize("prefix", ["", "model."])
def test_lightning_checkpoint_loads_strictly(tmp_path: Path, mar_config: dict, mar_dir: Path, prefix: str):
    reference = load_file(mar_dir / "model_small.safetensors")
    path = tmp_path / "epochepoch=03.ckpt"
    torch.save(lightning_checkpoint(reference, prefix), path)
    net = build(mar_config)
    net.to_empty(device="cpu")
    load_reference_checkpoint(net, path, prefix=prefix or None)
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())


def test_checkpoint_missing_key_is_one_line_error(tmp_path: Path, mar_config: dict, mar_dir: Path):
    reference = load_file(mar_dir / "model_small.safetensors")
    reference.pop("mask_token")
    path = tmp_path / "broken.ckpt"
    torch.save(lightning_checkpoint(reference), path)
    net = build(mar_config)
    net.to_empty(device="cpu")
    shape = re.escape(str(tuple(mar_config["state_dict"]["mask_token"])))
    with pytest.raises(CheckpointError, match=rf"broken\.ckpt .*1 missing \(mask_token {shape}\)") as err:
        load_reference_checkpoint(net, path)
    assert "\n" not in str(err.value)


def test_reference_kwargs_reject_an_inner_vae(mar_config: dict):
    with pytest.raises(ValueError, match="vae_config"):
        WorldMAR.from_reference_kwargs({**mar_config["constructor_kwargs"], "vae_config": {"target": "x"}})


# ----- inputs, embeddings, masks -----


def test_patchify_and_embeddings(model: WorldMAR, mar_io):
    x = model.tokens(mar_io["in_x_raw"])
    torch.testing.assert_close(x[0, 0], mar_io["x_patch_b0t0"], atol=0, rtol=0)
    torch.testing.assert_close(model.latents(x[:, 0]), mar_io["in_x_raw"][:, 0], atol=1e-5, rtol=1e-6)
    pad = padding_mask(mar_io["in_batch_nframes"], frames(mar_io))
    assert torch.equal(pad, mar_io["in_padding_mask"])
    with torch.no_grad():
        cond = model.condition(*inputs(mar_io)[1:])
        pose_b0t1 = model.pose_embedder(mar_io["in_poses_sub"][0, 1])
        stamps = cond.frames - model.pose_embedder(mar_io["in_poses_sub"])
    torch.testing.assert_close(cond.action[:, 0, 0, 0], mar_io["emb_action"], **EMB_TOL)
    torch.testing.assert_close(pose_b0t1, mar_io["emb_pose_b0t1"], **EMB_TOL)
    torch.testing.assert_close(stamps[:, :, 0, 0], mar_io["emb_timestamp"], **EMB_TOL)


def test_plucker_maps_in_both_modes(model: WorldMAR, mar_io, mar_dir: Path):
    poses = mar_io["in_poses5"].transpose(0, 1)
    corrected = plucker_tokens(poses, mar_io["in_batch_nframes"], reference_compat=False)
    torch.testing.assert_close(corrected, mar_io["in_poses_sub"], atol=1e-4, rtol=0)
    plucker = load_file(mar_dir / "plucker_io.safetensors")
    poses = plucker["dl_poses"][None]
    compat = plucker_tokens(poses, torch.tensor([poses.shape[1]]), reference_compat=True)
    torch.testing.assert_close(compat[0], plucker["dl_plucker_sub"], atol=1e-4, rtol=0)
    assert torch.equal(model.plucker(poses, torch.tensor([poses.shape[1]])), compat)
    padded = poses.clone()
    padded[0, -1] = float("nan")
    last_is_padding = plucker_tokens(padded, torch.tensor([poses.shape[1] - 1]), reference_compat=False)
    assert torch.equal(last_is_padding[0, -1], torch.zeros_like(last_is_padding[0, -1]))
    assert torch.isfinite(last_is_padding).all()


def test_frame_timestamps():
    numbers = torch.tensor([[120, 119, 118, 5], [6, 5, 0, 0]])
    stamps = frame_timestamps(numbers, torch.tensor([4, 2]))
    assert stamps.tolist() == [[0, -1, -2, -115], [0, -1, -7, -7]]


def test_masking_counts_and_target_mask(model: WorldMAR, mar_io, mar_config: dict):
    settings = mar_config["io"]
    counts = masked_counts(model.frame_tokens, settings["pred_mask_rate"], model.prev_masking_rate)
    assert counts == (settings["num_masked_pred"], settings["num_masked_ctx"])
    assert torch.equal(mask_from_orders(mar_io["mask_orders"], counts[0]), mar_io["pred_mask"])
    assert (mar_io["ctx_mask"].sum(dim=-1) == counts[1]).all()


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_attention_validity(model: WorldMAR, mar_io, mode: str):
    pad = padding_mask(mar_io["in_batch_nframes"], frames(mar_io))
    ctx = buffered(mar_io["ctx_mask"], model) if mode == "train" else None
    valid = token_validity(buffered(mar_io["pred_mask"], model), ctx, pad, ctx_overrides_padding=True)
    for name, got in (("s_valid_enc", valid.spatial_enc), ("s_valid_dec", valid.spatial_dec),
                      ("t_valid_enc", valid.temporal_enc), ("t_valid_dec", valid.temporal_dec)):
        assert torch.equal(got, mar_io[f"{mode}_{name}"]), name


def test_corrected_context_masks_keep_padding(model: WorldMAR, mar_io):
    pad = padding_mask(mar_io["in_batch_nframes"], frames(mar_io))
    valid = token_validity(buffered(mar_io["pred_mask"], model), buffered(mar_io["ctx_mask"], model), pad,
                           ctx_overrides_padding=False)
    expected = mar_io["train_s_valid_dec"] & pad[:, :, None]
    assert torch.equal(valid.spatial_dec, expected)
    assert not torch.equal(expected, mar_io["train_s_valid_dec"])  # the fixture exercises the difference


def test_corrected_training_differs_only_where_padding_was_overwritten(mar_config: dict, mar_dir: Path, mar_io):
    corrected = build(mar_config, reference_compat=False, device="cpu")
    load_reference_checkpoint(corrected, mar_dir / "model_small.safetensors")
    x, actions, plucker, stamps, nframes = inputs(mar_io)
    pad = padding_mask(nframes, frames(mar_io))
    corrected.train()
    with torch.no_grad():
        cond = corrected.condition(actions, plucker, stamps, nframes)
        dec = corrected.masked_encoder_decoder(corrected.tokens(x), cond, mar_io["pred_mask"], mar_io["ctx_mask"], pad)
    overwritten = (~pad[:, : corrected.num_prev_frames]).any(dim=1)
    assert overwritten.any() and not overwritten.all()
    torch.testing.assert_close(dec[~overwritten], mar_io["train_dec_out"][~overwritten], **EMB_TOL)
    assert (dec[overwritten] - mar_io["train_dec_out"][overwritten]).abs().max() > 1e-3


# ----- encoder / decoder -----


def test_encoder_decoder_eval(model: WorldMAR, mar_io):
    x, actions, plucker, stamps, nframes = inputs(mar_io)
    pad = padding_mask(nframes, frames(mar_io))
    pred = buffered(mar_io["pred_mask"], model)
    with torch.no_grad():
        cond = model.condition(actions, plucker, stamps, nframes)
        masks = token_validity(pred, None, pad, True).axis_masks()
        enc = model.forward_encoder(model.tokens(x), cond, masks, None)
        dec = model.masked_encoder_decoder(model.tokens(x), cond, mar_io["pred_mask"], None, pad)
    torch.testing.assert_close(enc, mar_io["eval_enc_out"], **EMB_TOL)
    torch.testing.assert_close(dec, mar_io["eval_dec_out"], **EMB_TOL)


def test_encoder_decoder_train(model: WorldMAR, mar_io):
    x, actions, plucker, stamps, nframes = inputs(mar_io)
    pad = padding_mask(nframes, frames(mar_io))
    model.train()
    try:
        with torch.no_grad():
            cond = model.condition(actions, plucker, stamps, nframes)
            masks = token_validity(buffered(mar_io["pred_mask"], model), buffered(mar_io["ctx_mask"], model), pad,
                                   True).axis_masks()
            enc = model.forward_encoder(model.tokens(x), cond, masks, model.attention_dropout())
            dec = model.masked_encoder_decoder(model.tokens(x), cond, mar_io["pred_mask"], mar_io["ctx_mask"], pad,
                                               model.attention_dropout())
    finally:
        model.eval()
    torch.testing.assert_close(enc[:, 0], mar_io["train_enc_out_pred_frame"], **EMB_TOL)
    torch.testing.assert_close(dec, mar_io["train_dec_out"], **EMB_TOL)


# ----- diffusion head -----


def test_diffusion_schedules(model: WorldMAR, mar_io, mar_config: dict):
    train, gen = model.diffloss.train_diffusion, model.diffloss.gen_diffusion
    torch.testing.assert_close(train.betas, mar_io["diff_train_betas"], atol=1e-15, rtol=0)
    torch.testing.assert_close(gen.betas, mar_io["diff_gen_betas"], atol=1e-15, rtol=0)
    assert gen.timestep_map.tolist() == mar_io["diff_gen_timestep_map"].tolist()
    assert gen.timestep_map.tolist() == mar_config["derived"]["gen_timestep_map"]
    assert space_timesteps(1000, "7") == [0, 166, 333, 500, 666, 832, 999]  # half-to-even rounding
    assert len(space_timesteps(1000, "ddim50")) == 50


def test_head_net(model: WorldMAR, mar_io):
    with torch.no_grad():
        out = model.diffloss.net(mar_io["net_x"], mar_io["net_t"], mar_io["net_c"])
    torch.testing.assert_close(out, mar_io["net_out"], **HEAD_TOL)


def test_ddim_trace(model: WorldMAR, mar_io):
    with torch.no_grad():
        trace = list(ddim_trajectory(model.diffloss.net, model.diffloss.gen_diffusion, mar_io["ddim_z"],
                                     mar_io["ddim_noise"]))
    torch.testing.assert_close(torch.stack([s for s, _ in trace]), mar_io["ddim_trace_sample"], **HEAD_TOL)
    torch.testing.assert_close(torch.stack([x0 for _, x0 in trace]), mar_io["ddim_trace_pred_xstart"], **HEAD_TOL)
    torch.testing.assert_close(trace[-1][0], mar_io["ddim_out"], **HEAD_TOL)


# ----- training loss -----


def test_training_loss_replays_reference(model: WorldMAR, mar_io, mar_config: dict):
    draws = TrainingDraws(mar_io["pred_mask"], mar_io["ctx_mask"], mar_io["loss_t"], mar_io["loss_noise"])
    model.train()
    try:
        with torch.no_grad():
            terms = model(*inputs(mar_io), draws=draws)
    finally:
        model.eval()
    assert isinstance(terms, LossTerms)
    torch.testing.assert_close(terms.loss.reshape(1), mar_io["loss"], atol=0, rtol=1e-5)
    assert math.isclose(terms.loss.item(), mar_config["io"]["loss"], rel_tol=1e-5)
    torch.testing.assert_close(terms.mse, mar_io["loss_terms_mse"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms.vb, mar_io["loss_terms_vb"], atol=1e-5, rtol=1e-5)


def test_training_draws_follow_reference_statistics(model: WorldMAR, mar_io, mar_config: dict):
    batch, n = mar_io["pred_mask"].shape
    generator = torch.Generator().manual_seed(5)
    draws = model.draw_training(batch, "cpu", generator)
    hidden = draws.pred_mask.sum(dim=1)
    assert (hidden == hidden[0]).all()
    assert math.floor(n * model.mask_ratio_min) <= hidden[0] <= n
    assert draws.ctx_mask.shape == (batch, model.num_prev_frames - 1, n)
    assert (draws.ctx_mask.sum(dim=2) == int(hidden[0] * model.prev_masking_rate)).all()
    rows = model.diffusion_batch_mul * batch * n
    timesteps = mar_config["derived"]["train_num_timesteps"]
    assert draws.t.shape == (rows,) and draws.t.min() >= 0 and draws.t.max() < timesteps
    assert draws.noise.shape == (rows, model.token_dim)
    assert truncated_mask_rate(0.0, model.mask_ratio_min) == pytest.approx(model.mask_ratio_min)
    assert truncated_mask_rate(1 - 1e-12, model.mask_ratio_min) == pytest.approx(1.0)
    again = model.draw_training(batch, "cpu", torch.Generator().manual_seed(5))
    assert torch.equal(again.pred_mask, draws.pred_mask) and torch.equal(again.noise, draws.noise)


def test_training_step_gives_finite_gradients(mar_config: dict, mar_dir: Path, mar_io):
    net = build(mar_config, reference_compat=False, device="cpu")
    load_reference_checkpoint(net, mar_dir / "model_small.safetensors")
    net.train()
    terms = net(*inputs(mar_io), generator=torch.Generator().manual_seed(1))
    terms.loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert net.diffloss.net.final_layer.linear.weight.grad.abs().sum() > 0


def test_reference_initialisation(mar_config: dict):
    torch.manual_seed(0)
    net = build(mar_config, device="cpu")
    final = net.diffloss.net.final_layer.linear.weight
    assert torch.equal(final, torch.zeros_like(final))
    assert torch.equal(net.encoder_norm.weight, torch.ones_like(net.encoder_norm.weight))
    assert net.buf_token.abs().sum() > 0 and net.z_proj.bias.abs().sum() == 0


# ----- MAR sampling -----


def replayed_start_noise(mar_io, model: WorldMAR, mar_iters: int) -> torch.Tensor:
    """The reference's per-iteration DDIM noise rows, placed at the tokens each iteration reveals."""
    orders = mar_io["sample_orders"]
    batch = orders.shape[0]
    noise = torch.zeros(batch, model.frame_tokens, model.token_dim)
    offset = 0
    for step, (after, before) in enumerate(reveal_schedule(model.frame_tokens, mar_iters)):
        group = orders[:, after:before].sort(dim=-1).values
        revealed = torch.zeros(orders.shape, dtype=torch.bool).scatter(1, group, True)
        assert torch.equal(revealed, mar_io["sample_iter_masks"][step])
        count = group.shape[1]
        assert count * batch == mar_io["sample_noise_rows"][step]
        rows = mar_io["sample_noise"][offset: offset + batch * count].view(batch, count, -1)
        noise.scatter_(1, group[..., None].expand(-1, -1, model.token_dim), rows)
        offset += batch * count
    assert offset == mar_io["sample_noise"].shape[0]
    return noise


def test_sample_one_frame_with_injected_randomness(model: WorldMAR, mar_io, mar_config: dict):
    mar_iters = mar_config["io"]["mar_iters"]
    noise = replayed_start_noise(mar_io, model, mar_iters)
    sampler = MARSampler(model, MARSettings(mar_iters=mar_iters), ReplayNoise(noise[None]))
    out = sampler.sample(*inputs(mar_io), orders=mar_io["sample_orders"])
    torch.testing.assert_close(out, mar_io["sample_out"], atol=1e-3, rtol=0)
    x = mar_io["in_x_raw"].clone()
    x[:, 0] = float("nan")  # the target frame's input is never read
    again = MARSampler(model, MARSettings(mar_iters=mar_iters), ReplayNoise(noise[None]))
    assert torch.equal(again.sample(x, *inputs(mar_io)[1:], orders=mar_io["sample_orders"]), out)


def test_sample_draws_order_and_noise_from_the_source(model: WorldMAR, mar_io):
    settings = MARSettings(mar_iters=3, diffusion_steps=5)
    first = MARSampler(model, settings, SeededNoise(7)).sample(*inputs(mar_io))
    second = MARSampler(model, settings, SeededNoise(7)).sample(*inputs(mar_io))
    other = MARSampler(model, settings, SeededNoise(8)).sample(*inputs(mar_io))
    assert first.shape == mar_io["sample_out"].shape
    assert torch.equal(first, second) and not torch.equal(first, other)
    assert first.abs().max() <= 1 / SCALE_FACTOR + 1e-3


def test_reveal_schedule_covers_every_token_once(mar_config: dict, mar_io):
    tokens = mar_config["derived"]["frame_seq_len"]
    schedule = reveal_schedule(tokens, mar_config["io"]["mar_iters"])
    batch = mar_io["sample_orders"].shape[0]
    assert [(before - after) * batch for after, before in schedule] == mar_io["sample_noise_rows"].tolist()
    assert schedule[0][1] == tokens and schedule[-1][0] == 0
    with pytest.raises(ValueError, match="mar_iters"):
        reveal_schedule(tokens, tokens + 1)


def test_bfloat16_model_samples(mar_config: dict, mar_dir: Path, mar_io):
    half = build(mar_config, device="cpu")
    load_reference_checkpoint(half, mar_dir / "model_small.safetensors")
    half = half.eval().to(torch.bfloat16)
    assert half.enc_spatial_rotary_embedder.freqs.dtype == torch.float32
    x, actions, plucker, stamps, nframes = inputs(mar_io)
    with torch.no_grad():
        cond = half.condition(actions, plucker, stamps, nframes)
        dec = half.masked_encoder_decoder(half.tokens(x), cond, mar_io["pred_mask"], None,
                                          padding_mask(nframes, frames(mar_io)))
    assert dec.dtype == torch.bfloat16
    torch.testing.assert_close(dec.float(), mar_io["eval_dec_out"], atol=0.15, rtol=0.05)
    out = MARSampler(half, MARSettings(mar_iters=2, diffusion_steps=4), SeededNoise(0)).sample(*inputs(mar_io))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# ----- reference_compat: attention dropout at sampling -----


def dropout_decoder(model: WorldMAR, mar_io, dropout: AttentionDropout | None) -> torch.Tensor:
    x, actions, plucker, stamps, nframes = inputs(mar_io)
    with torch.no_grad():
        cond = model.condition(actions, plucker, stamps, nframes)
        return model.masked_encoder_decoder(model.tokens(x), cond, mar_io["pred_mask"], None,
                                            padding_mask(nframes, frames(mar_io)), dropout)


def test_attention_dropout_only_at_compat_sampling(mar_config: dict, mar_dir: Path, mar_io):
    kwargs = {**mar_config["constructor_kwargs"], "attn_dropout": 0.1}
    compat = WorldMAR.from_reference_kwargs(kwargs, reference_compat=True)
    corrected = WorldMAR.from_reference_kwargs(kwargs, reference_compat=False)
    for net in (compat, corrected):
        load_reference_checkpoint(net, mar_dir / "model_small.safetensors")
        net.eval()
    assert corrected.attention_dropout() is None and compat.attention_dropout().p == 0.1
    clean = dropout_decoder(compat, mar_io, None)
    dropped = dropout_decoder(compat, mar_io, compat.attention_dropout(SeededNoise(3)))
    assert torch.equal(dropped, dropout_decoder(compat, mar_io, compat.attention_dropout(SeededNoise(3))))
    assert (dropped - clean).abs().max() > 1e-3
    keep_all = dropout_decoder(compat, mar_io, AttentionDropout(1e-12, SeededNoise(3)))
    torch.testing.assert_close(keep_all, clean, **EMB_TOL)
    torch.testing.assert_close(clean, mar_io["eval_dec_out"], **EMB_TOL)
    noise = replayed_start_noise(mar_io, corrected, mar_config["io"]["mar_iters"])
    sampled = MARSampler(corrected, MARSettings(mar_config["io"]["mar_iters"]), ReplayNoise(noise[None]))
    torch.testing.assert_close(sampled.sample(*inputs(mar_io), orders=mar_io["sample_orders"]), mar_io["sample_out"],
                               atol=1e-3, rtol=0)
