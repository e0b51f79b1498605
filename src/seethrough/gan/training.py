"""Train the ConceptWorld GAN reproducibly, and ship, load and save it with its card.

The hinge loss with a spectrally normalized discriminator (Miyato et al. 2018), one
discriminator step per generator step, Adam (lr 2e-4, betas 0.5 and 0.999), batch 64, on ConceptWorld's training split generated once into memory. Bit-for-bit
reproducibility needs the same seed, settings and thread count (``threads``, recorded in the card):
CPU convolutions split their sums by thread. After the last step the generator's batch-norm
statistics are re-estimated over many batches ("standing statistics") so that eval mode, where
every image depends on its own latent only, draws images like training mode does.

Example:
    >>> generator, card = train_gan(steps=2, n_train=16, batch_size=8, latent_dim=8, width=4,
    ...                             out=None, progress=False, measure=False)
    >>> card["steps"], generator(torch.randn(1, generator.latent_dim)).shape
    (2, torch.Size([1, 3, 64, 64]))
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seethrough.core.device import torch_threads
from seethrough.errors import InputError
from seethrough.gan.quality import generator_quality
from seethrough.models.generator import NAME, build_discriminator, build_generator
from seethrough.progress import progress_bar

DEFAULTS = {"steps": 3500, "n_train": 20_000, "batch_size": 64, "latent_dim": 100, "width": 16,
            "lr": 2e-4, "threads": 1, "hierarchical": False}


@torch.no_grad()
def standing_statistics(generator: torch.nn.Module, *, batches: int = 100, batch_size: int = 64,
                        seed: int = 0) -> torch.nn.Module:
    """Re-estimate every batch norm's running mean and variance as the plain average over
    ``batches`` batches of random latents (the generator is left in eval mode)."""
    norms = [m for m in generator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    generator.train()
    latents = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        generator(torch.randn(batch_size, generator.latent_dim, generator=latents))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return generator.eval()


def _resume(checkpoint: Path | None, seed: int, settings: dict) -> dict | None:
    if checkpoint is None or not checkpoint.is_file():
        return None
    state = torch.load(checkpoint, weights_only=False)
    if state["seed"] != seed or state["settings"] != settings:
        raise InputError(f"{checkpoint} is a checkpoint of another run (seed or settings differ): "
                         "remove it, or give the same options")
    return state


def train_gan(*, seed: int = 0, out: str | Path | None = None, progress: bool | None = None,
              measure: bool = True, measure_samples: int = 2000,
              checkpoint: str | Path | None = None,
              checkpoint_every: int = 250, **options) -> tuple[torch.nn.Module, dict]:
    """Train a DCGAN on ConceptWorld; write ``OUT.safetensors`` and ``OUT.json`` unless ``out``
    is None; return the generator (eval mode) and its card.

    Args:
        seed: the initialisation, batch order and latents.
        measure: put the generator's quality in the card (``generator_quality`` of
            ``measure_samples`` generated images against as many ConceptWorld validation images).
        checkpoint: a file to save the whole training state to every ``checkpoint_every``
            steps (atomically); a run with the same seed and options resumes from it and ends
            with the same weights as an uninterrupted one. Removed when the run ends.
        options: any of ``DEFAULTS`` (steps, n_train, batch_size, latent_dim, width, lr, threads).
    """
    from seethrough.data import ConceptWorld
    from seethrough.models.train import generate

    settings = {**DEFAULTS, **options}
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise InputError(f"unknown GAN training options {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    if min(settings["steps"], settings["n_train"], settings["batch_size"], settings["threads"]) < 1:
        raise InputError("steps, n_train, batch_size and threads must be at least 1")
    if settings["hierarchical"] and settings["latent_dim"] % 5:
        raise InputError(f"a hierarchical latent is cut into 5 chunks: latent_dim "
                         f"{settings['latent_dim']} must be a multiple of 5 (e.g. --latent-dim 100)")
    started = time.perf_counter()
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    resumed = _resume(checkpoint, seed, settings)
    with torch_threads(settings["threads"]):
        images, _ = generate(ConceptWorld("train", length=settings["n_train"], size=64),
                             progress, "train set")
        torch.manual_seed(seed)
        generator = build_generator(settings["latent_dim"], settings["width"],
                                    settings["hierarchical"])
        discriminator = build_discriminator(settings["width"])
        betas = (0.5, 0.999)
        optimize_g = torch.optim.Adam(generator.parameters(), settings["lr"], betas=betas)
        optimize_d = torch.optim.Adam(discriminator.parameters(), settings["lr"], betas=betas)
        draws = torch.Generator().manual_seed(seed)
        history, first, spent = [], 0, 0.0
        if resumed is not None:
            for module, key in ((generator, "generator"), (discriminator, "discriminator"),
                                (optimize_g, "optimize_g"), (optimize_d, "optimize_d")):
                module.load_state_dict(resumed[key])
            draws.set_state(resumed["draws"])
            history, first, spent = resumed["history"], resumed["step"] + 1, resumed["seconds"]
        bar = progress_bar(range(first, settings["steps"]), "train GAN", progress=progress,
                           unit="step", total=settings["steps"] - first)
        generator.train()
        for step in bar:
            index = torch.randint(len(images), (settings["batch_size"],), generator=draws)
            real = images[index].float() / 255
            fake = generator(torch.randn(len(index), settings["latent_dim"], generator=draws))
            loss_d = (F.relu(1 - discriminator(real)).mean()
                      + F.relu(1 + discriminator(fake.detach())).mean())
            optimize_d.zero_grad(set_to_none=True)
            loss_d.backward()
            optimize_d.step()
            loss_g = -discriminator(fake).mean()
            optimize_g.zero_grad(set_to_none=True)
            loss_g.backward()
            optimize_g.step()
            if step % 50 == 0 or step == settings["steps"] - 1:
                history.append({"step": step, "loss_d": round(loss_d.item(), 4),
                                "loss_g": round(loss_g.item(), 4)})
                bar.set_postfix(d=f"{loss_d.item():.3f}", g=f"{loss_g.item():.3f}")
            if checkpoint is not None and (step + 1) % checkpoint_every == 0:
                _save_checkpoint(checkpoint, {
                    "seed": seed, "settings": settings, "step": step, "history": history,
                    "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
                    "optimize_g": optimize_g.state_dict(), "optimize_d": optimize_d.state_dict(),
                    "draws": draws.get_state(), "seconds": spent + time.perf_counter() - started})
        standing_statistics(generator, batch_size=settings["batch_size"], seed=seed)
    train_seconds = round(spent + time.perf_counter() - started, 1)
    card = {
        "name": Path(out).name if out else NAME,
        "architecture": (("hierarchical latent (BigGAN: 5 chunks, conditional batch norm), "
                          if settings["hierarchical"] else "")
                         + f"DCGAN-style generator (upsample + 3x3 conv), latent "
                         f"{settings['latent_dim']}, widths "
                         f"{[8 * settings['width'], 4 * settings['width'], 2 * settings['width'], settings['width']]}"
                         ", 64 px, output in [0, 1]; SN discriminator mirrored"),
        "loss": "hinge loss, spectral norm in the discriminator; Adam betas (0.5, 0.999); "
                "standing BN statistics over 100 training-size batches after training",
        "seed": seed, **settings,
        "data": {"world": "ConceptWorld", "world_seed": 0, "split": "train", "size": 64},
        "training_command": f"seethrough train-gan --seed {seed} "
        + " ".join(_option(key, value) for key, value in settings.items())
        + (f" --out {out}" if out else ""),
        "history": history,
        "train_seconds": train_seconds,
        "torch": torch.__version__,
    }
    if measure:
        real, _ = generate(ConceptWorld("val", length=measure_samples, size=64), progress, "val set")
        card["quality"] = generator_quality(generator, real.float() / 255, samples=measure_samples)
    if out is not None:
        save_generator(generator, card, out)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return generator, card


def train_encoder_for(generator: str | Path = NAME, *, out: str | Path | None = None,
                      seed: int = 0, steps: int = 3000, progress: bool | None = None):
    """Train ``seethrough.gan.inversion.Encoder`` for a generator (shipped name or path); write
    ``OUT.safetensors`` / ``OUT.json`` unless ``out`` is None; return it and its card."""
    from seethrough.gan.inversion import train_encoder
    from seethrough.models.generator import load_generator

    encoder, card = train_encoder(load_generator(generator), steps=steps, seed=seed,
                                  progress=progress)
    card.update(name=Path(out).name if out else f"{NAME}_encoder", generator=str(generator),
                training_command=f"seethrough train-gan --encoder --generator {generator} "
                f"--seed {seed} --encoder-steps {steps}" + (f" --out {out}" if out else ""))
    if out is not None:
        save_generator(encoder, card, out)
    return encoder, card


def _option(key: str, value) -> str:
    """``--key value`` as ``seethrough train-gan`` takes it (``--key``/``--no-key`` for flags)."""
    flag = key.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {value}"


def _save_checkpoint(path: Path, state: dict) -> None:
    from seethrough.atomic import atomic_path

    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def save_generator(generator: torch.nn.Module, card: dict, out: str | Path) -> Path:
    """Write ``out.safetensors`` (weights and BN statistics) and ``out.json`` atomically (also
    for an encoder)."""
    from safetensors.torch import save_file

    from seethrough.atomic import atomic_path, write_text_atomic
    from seethrough.results import json_safe

    out = Path(out)
    state = {k: v.contiguous() for k, v in generator.state_dict().items()}
    with atomic_path(out.with_suffix(".safetensors")) as temporary:
        save_file(state, str(temporary))
    write_text_atomic(out.with_suffix(".json"), json.dumps(json_safe(card), indent=1) + "\n")
    return out.with_suffix(".safetensors")


__all__ = [
    "DEFAULTS",
    "NAME",
    "save_generator",
    "standing_statistics",
    "train_encoder_for",
    "train_gan",
]
