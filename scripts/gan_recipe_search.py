"""Search GAN training recipes for ConceptWorld on a GPU: which one draws shapes, not blobs?

Each recipe trains in its own process (all on one GPU at once) and is measured at fixed step
counts: Fréchet distance on ConceptNet features, concept coverage of shapes and scenes (the
segmenter's), ConceptNet's mean top probability, and InterFaceGAN shape boundaries' held-out
accuracy, for the raw and the weight-averaged (EMA) generator. Results: one JSON per recipe and
a sample grid per measured step, under --out.

    python scripts/gan_recipe_search.py --out /tmp/search --seconds 300 [--recipes a,b] [--cpu-time]

``--cpu-time`` times 20 steps of each recipe on this machine's CPU instead (2 threads): what a
step costs where the shipped generator must train in 30 minutes.
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BASE = dict(loss="hinge", sn=True, r1=0.0, betas=(0.5, 0.999), lr_g=2e-4, lr_d=2e-4, n_dis=1,
            width=16, d_width=16, batch=64, latent=100, ema=0.999, g_convs=1)
RECIPES = {
    "base": {},
    "hier": dict(hier=True),
    "proj": dict(projected="features"),
    "proj_pixel": dict(projected="pixel"),
    "proj_hier": dict(projected="features", hier=True),
    "d32": dict(d_width=32),
    "d64": dict(d_width=64),
    "w32": dict(width=32, d_width=32),
    "sngan": dict(betas=(0.0, 0.9), lr_g=1e-4, lr_d=4e-4),
    "ndis2": dict(n_dis=2),
    "ns_r1": dict(loss="ns", sn=False, r1=1.0, betas=(0.0, 0.99)),
    "ns_r10": dict(loss="ns", sn=False, r1=10.0),
    "ns_r1_sn": dict(loss="ns", sn=True, r1=1.0, betas=(0.0, 0.99)),
    "g2conv": dict(g_convs=2),
    "b128": dict(batch=128),
    "d32_sngan": dict(d_width=32, betas=(0.0, 0.9), lr_g=1e-4, lr_d=4e-4),
    "d32_g2": dict(d_width=32, g_convs=2),
}
MEASURE_AT = (1000, 2000, 3500, 5000, 7000, 10000, 14000, 20000, 28000, 40000)
SHAPES = ("circle", "square", "star", "triangle", "cross")


def build_g(c):
    from collections import OrderedDict

    from seethrough.models.generator import Generator, _dcgan_init, build_generator

    if c.get("hier"):  # BigGAN's hierarchical latent (seethrough's HierarchicalGenerator)
        return build_generator(c["latent"], c["width"], hierarchical=True)
    g = Generator(c["latent"], c["width"])
    if c["g_convs"] == 2:
        for name in ("layer2", "layer3", "layer4"):
            block = getattr(g, name)
            out = block.conv.out_channels
            extra = nn.Sequential(OrderedDict(conv=nn.Conv2d(out, out, 3, 1, 1, bias=False),
                                              bn=nn.BatchNorm2d(out), relu=nn.ReLU(inplace=True)))
            setattr(g, name, nn.Sequential(*block, *extra))
    return _dcgan_init(g)


def build_d(c):
    from collections import OrderedDict

    from torch.nn.utils.parametrizations import spectral_norm

    from seethrough.models.generator import _ToSymmetric

    if c.get("projected"):
        return ProjectedD(c["d_width"], c["projected"] == "pixel")
    wrap = spectral_norm if c["sn"] else (lambda m: m)
    w = c["d_width"]
    layers = OrderedDict(to_symmetric=_ToSymmetric())
    ch = 3
    for i, o in enumerate((w, 2 * w, 4 * w, 8 * w), 1):
        layers[f"layer{i}"] = nn.Sequential(wrap(nn.Conv2d(ch, o, 4, 2, 1)), nn.LeakyReLU(0.1, True))
        ch = o
    layers["output"] = wrap(nn.Conv2d(ch, 1, 4, 1, 0))
    layers["flatten"] = nn.Flatten(0)
    return nn.Sequential(layers)


class ProjectedD(nn.Module):
    """Projected GAN (Sauer et al. 2021), small: frozen ConceptNet features at three depths, a
    spectrally normalized conv head on each; logits (N, heads)."""

    TAPS = ("block2", "block3", "block5")

    def __init__(self, w, pixel):
        super().__init__()
        from torch.nn.utils.parametrizations import spectral_norm

        from seethrough.models import load_model

        net = load_model("conceptnet").eval()
        self.net = nn.ModuleDict({"normalize": net.normalize, **dict(net.features.named_children())})
        for p in self.net.parameters():
            p.requires_grad_(False)
        sn = spectral_norm
        self.heads = nn.ModuleDict({
            "block2": nn.Sequential(sn(nn.Conv2d(32, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.1, True),   # 16 -> 8
                                    sn(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), nn.LeakyReLU(0.1, True),  # 4
                                    sn(nn.Conv2d(4 * w, 1, 4, 1, 0))),
            "block3": nn.Sequential(sn(nn.Conv2d(64, 4 * w, 4, 2, 1)), nn.LeakyReLU(0.1, True),   # 8 -> 4
                                    sn(nn.Conv2d(4 * w, 1, 4, 1, 0))),
            "block5": nn.Sequential(sn(nn.Conv2d(128, 4 * w, 4, 2, 1)), nn.LeakyReLU(0.1, True),
                                    sn(nn.Conv2d(4 * w, 1, 4, 1, 0))),
        })
        self.pixel = build_d({**BASE, "d_width": w}) if pixel else None

    def train(self, mode=True):
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, x):
        outs = [] if self.pixel is None else [self.pixel(x)]
        h = x
        for name, module in self.net.items():
            h = module(h)
            if name in self.heads:
                outs.append(self.heads[name](h).flatten())
        return torch.stack(outs, 1)


def d_loss(c, d, real, fake):
    if c["r1"]:
        real = real.detach().requires_grad_(True)
    out_r, out_f = d(real), d(fake)
    if c["loss"] == "hinge":
        loss = F.relu(1 - out_r).mean() + F.relu(1 + out_f).mean()
    else:
        loss = F.softplus(-out_r).mean() + F.softplus(out_f).mean()
    if c["r1"]:
        (grad,) = torch.autograd.grad(out_r.sum(), real, create_graph=True)
        loss = loss + c["r1"] / 2 * grad.pow(2).flatten(1).sum(1).mean()
    return loss


def g_loss(c, d, fake):
    out = d(fake)
    return -out.mean() if c["loss"] == "hinge" else F.softplus(-out).mean()


class Meter:
    def __init__(self, device, val):
        from seethrough.gan.quality import feature_extractor, features_of
        from seethrough.models import load_model

        self.device = device
        self.net = load_model("conceptnet").to(device).eval()
        self.seg = load_model("conceptworld_segmenter").to(device).eval()
        self.extractor = feature_extractor(self.net)
        self.val = val.to(device).float() / 255
        self.real_features = features_of(self.extractor, self.val)
        self.extractor1 = feature_extractor(load_model("conceptnet_seed1").to(device).eval())
        self.real_features1 = features_of(self.extractor1, self.val)
        from seethrough.gan.quality import concept_shares
        self.real_shares = concept_shares(self.seg, self.val)

    @torch.no_grad()
    def __call__(self, g) -> dict:
        from seethrough.errors import InputError
        from seethrough.gan.attributes import attribute_scores
        from seethrough.gan.directions import _boundary
        from seethrough.gan.quality import concept_shares, features_of, frechet_distance
        from seethrough.gan.training import standing_statistics

        g = copy.deepcopy(g).cpu()
        standing_statistics(g, batch_size=64)
        g = g.to(self.device).eval()
        z = torch.randn(4000, g.latent_dim, generator=torch.Generator().manual_seed(0))
        images = torch.cat([g(z[i:i + 500].to(self.device)) for i in range(0, 4000, 500)])
        fd = frechet_distance(features_of(self.extractor, images[:2000]), self.real_features)
        shares = concept_shares(self.seg, images[:1000])
        coverage = {f"{k[0]}:{k[1]}": round(shares[k] / v, 3) for k, v in self.real_shares.items()
                    if v and k[0] in ("shape", "scene")}
        top = F.softmax(self.net(images[:2000]), 1).max(1).values.mean().item()
        attrs = [f"shape:{s}" for s in SHAPES] + ["colour:red", "scene:sky"]
        scores = attribute_scores(images, attrs, segmenter=self.seg, classifier=self.net)
        boundaries = {}
        for a in attrs:
            try:
                boundaries[a] = round(_boundary(a, z, scores[a].cpu(), 0.1, 0.3, 0).held_out_accuracy, 3)
            except InputError:  # the generator never shows it
                boundaries[a] = None
        fd1 = frechet_distance(features_of(self.extractor1, images[:2000]), self.real_features1)
        return {"fd": round(fd, 2), "fd_seed1": round(fd1, 2), "top_prob": round(top, 3), "coverage": coverage,
                "boundaries": boundaries}, images[:32].cpu()


def run(name, seconds, data_path, out, device, measure_at=MEASURE_AT):
    from torchvision.utils import save_image

    torch.set_num_threads(int(os.environ.get("SEARCH_THREADS", "2")))
    c = {**BASE, **RECIPES[name]}
    data = torch.load(data_path)
    train, val = data["train"].to(device), data["val"]
    meter = Meter(device, val)
    torch.manual_seed(0)
    g, d = build_g(c).to(device), build_d(c).to(device)
    ema = copy.deepcopy(g).eval()
    opt_g = torch.optim.Adam(g.parameters(), c["lr_g"], betas=c["betas"])
    opt_d = torch.optim.Adam(d.parameters(), c["lr_d"], betas=c["betas"])
    draws = torch.Generator(device=device).manual_seed(0)
    results, started, step = [], time.time(), 0
    g.train()
    while time.time() - started < seconds and step < measure_at[-1]:
        for _ in range(c["n_dis"]):
            real = train[torch.randint(len(train), (c["batch"],), generator=draws, device=device)].float() / 255
            fake = g(torch.randn(c["batch"], c["latent"], generator=draws, device=device))
            loss = d_loss(c, d, real, fake.detach())
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
        loss = g_loss(c, d, fake)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), g.parameters()):
                pe.lerp_(p, 1 - c["ema"])
        step += 1
        if step in measure_at:
            row = {"step": step, "seconds": round(time.time() - started, 1)}
            for label, model in (("raw", g), ("ema", ema)):
                row[label], images = meter(model)
                save_image(images, out / f"{name}-{step}-{label}.png", nrow=8, padding=1)
            g.train()
            results.append(row)
            (out / f"{name}.json").write_text(json.dumps({"recipe": c, "results": results}, indent=1))
            print(name, json.dumps(row), flush=True)


def cpu_time(names):
    torch.set_num_threads(2)
    for name in names:
        c = {**BASE, **RECIPES[name]}
        torch.manual_seed(0)
        g, d = build_g(c), build_d(c)
        opt_g = torch.optim.Adam(g.parameters(), c["lr_g"], betas=c["betas"])
        opt_d = torch.optim.Adam(d.parameters(), c["lr_d"], betas=c["betas"])
        real = torch.rand(c["batch"], 3, 64, 64)
        times = []
        for i in range(25):
            t = time.perf_counter()
            for _ in range(c["n_dis"]):
                fake = g(torch.randn(c["batch"], c["latent"]))
                loss = d_loss(c, d, real, fake.detach())
                opt_d.zero_grad(); loss.backward(); opt_d.step()
            loss = g_loss(c, d, fake)
            opt_g.zero_grad(); loss.backward(); opt_g.step()
            times.append(time.perf_counter() - t)
        per = sorted(times[5:])[len(times[5:]) // 2]
        print(f"{name}: {per * 1000:.1f} ms/step, 30 min = {1800 / per:.0f} steps", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/search"))
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--cpu-time", action="store_true")
    parser.add_argument("--measure-at", default=",".join(map(str, MEASURE_AT)))
    args = parser.parse_args()
    names = args.recipes.split(",")
    if args.cpu_time:
        return cpu_time(names)
    from seethrough.data import ConceptWorld
    from seethrough.models.train import generate

    args.out.mkdir(parents=True, exist_ok=True)
    data_path = Path("/tmp/gan_search_data.pt")
    t = time.time()
    train, _ = generate(ConceptWorld("train", length=20000, size=64), False)
    val, _ = generate(ConceptWorld("val", length=2000, size=64), False)
    torch.save({"train": train, "val": val}, data_path)
    print(f"data in {time.time() - t:.0f} s", flush=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=run, args=(n, args.seconds, data_path, args.out, device,
                                                       tuple(map(int, args.measure_at.split(","))))) for n in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    data_path.unlink()


if __name__ == "__main__":
    main()
