"""What training reads from a frozen backbone: its native resolution, the VAE posteriors of
exemplar images and the UNet's prediction in fp32.

RRNet's training (`rrnet.train`) and the baselines' training loop (`rrnet.baselines.loop`) share
these, so a rectifier and a baseline see exactly the same latents and the same UNet call; they
live here so that neither borrows from the other.
"""

from __future__ import annotations

import torch


def default_resolution(pipe) -> int:
    """The resolution the UNet was built for (sample_size x VAE scale factor)."""
    return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)


@torch.no_grad()
def latent_distribution(pipe, images: torch.Tensor, chunk: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior mean and std of each image, scaled by the VAE's scaling factor."""
    vae = pipe.vae
    means, stds = [], []
    for part in images.split(chunk):
        dist = vae.encode(part.to(vae.device, vae.dtype)).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    scale = vae.config.scaling_factor
    return torch.cat(means) * scale, torch.cat(stds) * scale


def unet_predict(pipe, latents: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor,
                 added_cond_kwargs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Frozen UNet forward in its own dtype; the prediction comes back in fp32 for the loss.

    `added_cond_kwargs`: SDXL's global conditions (pooled text embeddings, time ids), see
    `rrnet.backbones.sdxl.added_conditions`."""
    unet = pipe.unet
    if added_cond_kwargs is None:
        out = unet(latents.to(unet.dtype), timesteps, encoder_hidden_states=embeds.to(unet.dtype)).sample
    else:
        out = unet(latents.to(unet.dtype), timesteps, encoder_hidden_states=embeds.to(unet.dtype),
                   added_cond_kwargs=added_cond_kwargs).sample
    return out.float()
