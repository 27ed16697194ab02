"""Times the PyTorch peers the way `seglab bench` times seglab: the median milliseconds of one
training step (every optimizer step of the model) or of one predicted batch of windows,
after warm-up, on random inputs. Prints one JSON object.

    python bench.py train --model unet3d --scale cpu-small [--batch 4] [--steps 10]
                    [--threads 2] [--counts '{"unet3d": ...}']

With --counts (the output of `seglab models --json`), the parameter counts of the peers are
asserted equal to seglab's first.
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from models import PATCH, build, param_counts


def dice_loss(pred, target, smooth_num=1.0, smooth_den=1.0):
    inter = (pred * target).sum()
    return 1 - (2 * inter + smooth_num) / (pred.sum() + target.sum() + smooth_den)


def lsgan(scores, target):
    return ((scores - target) ** 2).mean()


def weighted_l1(pred, target, weights):
    per_channel = (pred - target).abs().mean((0, 2, 3, 4))
    return (per_channel * weights).sum()


def adam(module, lr, beta1=0.9, amsgrad=False):
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(beta1, 0.999), eps=1e-7, amsgrad=amsgrad)


def frozen(module, flag):
    for p in module.parameters():
        p.requires_grad_(not flag)


def make_train_step(model, nets, classes):
    if model == "unet3d":
        net = nets["unet3d"]
        opt = adam(net, 1e-4, amsgrad=True)

        def step(x, y):
            opt.zero_grad(set_to_none=True)
            loss = dice_loss(net(x), y)
            loss.backward()
            opt.step()
            return loss.item()

        return step
    if model == "vox2vox":
        g, d = nets["generator"], nets["discriminator"]
        opt_g, opt_d = adam(g, 2e-4, 0.5), adam(d, 2e-4, 0.5)

        def step(x, y):
            opt_g.zero_grad(set_to_none=True)
            opt_d.zero_grad(set_to_none=True)
            fake = g(x)
            frozen(d, True)
            loss_g = 5.0 * dice_loss(fake, y, 0.0, 1e-5) + lsgan(d(x, fake), 1.0)
            frozen(d, False)
            loss_d = 0.5 * (lsgan(d(x, y), 1.0) + lsgan(d(x, fake.detach()), 0.0))
            (loss_g + loss_d).backward()
            opt_g.step()
            opt_d.step()
            return loss_g.item() + loss_d.item()

        return step
    if model == "cyclegan":
        g_ab, g_ba, d_a, d_b = nets["g_ab"], nets["g_ba"], nets["d_a"], nets["d_b"]
        opts = {k: adam(v, 5e-4 if k.startswith("g") else 1e-4, 0.5) for k, v in nets.items()}
        w = torch.tensor([3.5] + [1.0] * (classes - 1))

        def composite(gen, other, disc, x, y):
            frozen(other, True)
            frozen(disc, True)
            gx = gen(x)
            adv = lsgan(disc(gx), 1.0)
            ident = weighted_l1(gen(y), y, w)
            cycle = weighted_l1(other(gx), x, w) + weighted_l1(gen(other(y)), y, w)
            total = adv + 5.0 * ident + 10.0 * cycle
            frozen(other, False)
            frozen(disc, False)
            return total

        def disc_steps(disc, opt, real, fake):
            for scores, target in ((real, 1.0), (fake, 0.0)):
                opt.zero_grad(set_to_none=True)
                (0.5 * lsgan(disc(scores), target)).backward()
                opt.step()

        def step(images, masks):
            a, b = images * 2 - 1, masks * 2 - 1
            with torch.no_grad():
                fake_a, fake_b = g_ba(b), g_ab(a)
            opts["g_ba"].zero_grad(set_to_none=True)
            composite(g_ba, g_ab, d_a, b, a).backward()
            opts["g_ba"].step()
            disc_steps(d_a, opts["d_a"], a, fake_a)
            opts["g_ab"].zero_grad(set_to_none=True)
            loss = composite(g_ab, g_ba, d_b, a, b)
            loss.backward()
            opts["g_ab"].step()
            disc_steps(d_b, opts["d_b"], b, fake_b)
            return loss.item()

        return step
    raise ValueError(model)


def predictor(model, nets):
    net = {"unet3d": "unet3d", "vox2vox": "generator", "cyclegan": "g_ab"}[model]
    net = nets[net]
    net.eval()

    def predict(x):
        with torch.no_grad():
            y = net(x if model != "cyclegan" else x * 2 - 1)
            return y if model != "cyclegan" else (y + 1) / 2

    return predict


def main():
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["train", "predict"])
    p.add_argument("--model", required=True, choices=["unet3d", "vox2vox", "cyclegan"])
    p.add_argument("--scale", default="cpu-small", choices=["cpu-small", "paper"])
    p.add_argument("--batch", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--counts", help="`seglab models --json` output to check against")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    if a.counts:
        ours, theirs = param_counts(a.scale, a.classes), json.loads(a.counts)
        if ours != theirs:
            sys.exit(f"parameter counts differ: PyTorch {ours} vs seglab {theirs}")

    n = PATCH[a.scale]
    steps = a.steps or (10 if a.scale == "cpu-small" else 3)
    default_batch = 1 if a.phase == "predict" else (2 if a.model == "cyclegan" else 4)
    batch = a.batch or default_batch
    nets = build(a.model, a.scale, a.classes)
    shape = (batch, a.classes, n, n, n)
    images = torch.rand(shape)
    masks = (torch.rand(shape) < 0.2).float()
    if a.phase == "train":
        step = make_train_step(a.model, nets, a.classes)

        def run():
            step(images, masks)

    else:
        predict = predictor(a.model, nets)

        def run():
            predict(images)

    for _ in range(a.warmup):
        run()
    samples = []
    for _ in range(steps):
        t = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t) * 1000)
    print(
        json.dumps(
            {
                "phase": a.phase,
                "model": a.model,
                "scale": a.scale,
                "patch": n,
                "batch": batch,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "median_ms": statistics.median(samples),
                "min_ms": min(samples),
                "samples_ms": samples,
            }
        )
    )


if __name__ == "__main__":
    main()
