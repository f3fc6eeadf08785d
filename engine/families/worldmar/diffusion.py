"""Gaussian diffusion of the WorldMAR per-token head, as nwrousell/world-mar takes it from DiT/IDDPM
(`gaussian_diffusion.py`, `respace.py`): cosine schedule, timestep respacing, the hybrid MSE + VB
training loss of a learned-variance model, and DDIM (eta = 0) steps.

Tables are float64 like the reference; every coefficient is cast to float32 before it touches a
tensor, which is what the reference's `_extract_into_tensor` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

TRAIN_TIMESTEPS = 1000
MAX_BETA = 0.999
DECODER_BIN = 1.0 / 255.0

HeadNet = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cosine_betas(steps: int = TRAIN_TIMESTEPS, max_beta: float = MAX_BETA) -> list[float]:
    """IDDPM cosine schedule: beta_i = min(1 - abar((i+1)/n) / abar(i/n), max_beta), in Python floats."""
    def abar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    return [min(1 - abar((i + 1) / steps) / abar(i / steps), max_beta) for i in range(steps)]


def space_timesteps(num_timesteps: int, spacing: str | int) -> list[int]:
    """The kept timesteps of `respace.space_timesteps`: "S" or "S1,S2,..." sections, or "ddimN" strides.

    Within a section the kept steps are `round(c_j)` with `c_j` accumulated in floats and Python's
    half-to-even `round`, exactly as the reference.
    """
    spacing = str(spacing)
    if spacing.startswith("ddim"):
        wanted = int(spacing[len("ddim"):])
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == wanted:
                return list(range(0, num_timesteps, stride))
        raise ValueError(f"cannot take exactly {wanted} of {num_timesteps} steps with an integer stride")
    counts = [int(part) for part in spacing.split(",")]
    size_per, extra = divmod(num_timesteps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))


class GaussianDiffusion:
    """A (respaced) diffusion process over the kept timesteps `timestep_map` of the 1000-step cosine one."""

    def __init__(self, betas: list[float], timestep_map: list[int]) -> None:
        b = torch.tensor(betas, dtype=torch.float64, device="cpu")
        acp = torch.cumprod(1.0 - b, dim=0)
        acp_prev = torch.cat([torch.ones(1, dtype=torch.float64, device="cpu"), acp[:-1]])
        posterior_variance = b * (1.0 - acp_prev) / (1.0 - acp)
        clipped_variance = torch.cat([posterior_variance[1:2], posterior_variance[1:]])
        self.num_timesteps = len(betas)
        self.betas = b
        self.timestep_map = torch.tensor(timestep_map, dtype=torch.int64, device="cpu")
        self.tables64 = {
            "alphas_cumprod": acp,
            "alphas_cumprod_prev": acp_prev,
            "sqrt_alphas_cumprod": acp.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - acp).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / acp).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / acp - 1).sqrt(),
            "posterior_log_variance_clipped": clipped_variance.log(),
            "posterior_mean_coef1": b * acp_prev.sqrt() / (1.0 - acp),
            "posterior_mean_coef2": (1.0 - acp_prev) * (1.0 - b).sqrt() / (1.0 - acp),
            "log_betas": b.log(),
        }
        self._on_device: dict[torch.device, dict[str, torch.Tensor]] = {}

    @classmethod
    def respaced(cls, spacing: str | int, num_timesteps: int = TRAIN_TIMESTEPS) -> GaussianDiffusion:
        """`create_diffusion(timestep_respacing=spacing, noise_schedule="cosine")`; "" keeps every step."""
        kept = space_timesteps(num_timesteps, spacing) if str(spacing) else list(range(num_timesteps))
        base = torch.tensor(cosine_betas(num_timesteps), dtype=torch.float64, device="cpu")
        acp = torch.cumprod(1.0 - base, dim=0).tolist()
        betas, last = [], 1.0
        for step in kept:
            betas.append(1 - acp[step] / last)
            last = acp[step]
        return cls(betas, kept)

    def table(self, name: str, device: torch.device) -> torch.Tensor:
        """float32 copy of a float64 table on `device` (made once per device)."""
        tables = self._on_device.get(device)
        if tables is None:
            tables = {key: value.float().to(device) for key, value in self.tables64.items()}
            tables["timestep_map"] = self.timestep_map.to(device)
            self._on_device[device] = tables
        return tables[name]

    def _at(self, name: str, t: torch.Tensor) -> torch.Tensor:
        return self.table(name, t.device)[t][:, None]

    # ----- training -----

    def training_terms(self, net: HeadNet, x_start: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                       noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row (MSE of the predicted noise, variational-bound term in bits) for rows (N, C) at
        step indices t (N,), conditioned on cond (N, Dz): the "hybrid" loss of a learned-range variance."""
        x_t = (self._at("sqrt_alphas_cumprod", t) * x_start
               + self._at("sqrt_one_minus_alphas_cumprod", t) * noise)
        out = net(x_t, self.table("timestep_map", t.device)[t], cond)
        eps, var_values = out.split(x_start.shape[1], dim=1)
        true_mean = self._posterior_mean(x_start, x_t, t)
        true_log_var = self._at("posterior_log_variance_clipped", t)
        model_mean, model_log_var = self._model_mean_log_variance(x_t, t, eps.detach(), var_values)
        kl = normal_kl(true_mean, true_log_var, model_mean, model_log_var).mean(dim=1) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, model_mean, 0.5 * model_log_var)
        vb = torch.where(t == 0, nll.mean(dim=1) / math.log(2.0), kl)
        mse = ((noise - eps) ** 2).mean(dim=1)
        return mse, vb

    def _posterior_mean(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._at("posterior_mean_coef1", t) * x_start + self._at("posterior_mean_coef2", t) * x_t

    def _model_mean_log_variance(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                                 var_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        min_log = self._at("posterior_log_variance_clipped", t)
        max_log = self._at("log_betas", t)
        frac = (var_values + 1) / 2
        log_var = frac * max_log + (1 - frac) * min_log
        x_start = (self._at("sqrt_recip_alphas_cumprod", t) * x_t
                   - self._at("sqrt_recipm1_alphas_cumprod", t) * eps)
        return self._posterior_mean(x_start, x_t, t), log_var

    # ----- sampling -----

    def ddim_step(self, x: torch.Tensor, eps: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM (eta = 0) step from step `index` with clipped x0: returns (x_{index-1}, x0 estimate)."""
        recip = self.table("sqrt_recip_alphas_cumprod", x.device)[index]
        recipm1 = self.table("sqrt_recipm1_alphas_cumprod", x.device)[index]
        abar_prev = self.table("alphas_cumprod_prev", x.device)[index]
        x_start = (recip * x - recipm1 * eps).clamp(-1, 1)
        eps = (recip * x - x_start) / recipm1
        return x_start * abar_prev.sqrt() + (1 - abar_prev).sqrt() * eps, x_start


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor,
              logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + ((mean1 - mean2) ** 2) * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor,
                                        log_scales: torch.Tensor) -> torch.Tensor:
    """Log-likelihood (nats) of x under a Gaussian discretised to 1/255 bins on [-1, 1] (IDDPM)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + DECODER_BIN))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - DECODER_BIN))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
