#!/usr/bin/env python3
"""Does the previous frame tell a scene line from a streak? A feasibility spike, not the trainer.

Trains the lite generator (4x space-to-depth, 32 channels, 3 residual blocks, predicts the rain
layer and subtracts it: the same net as `lite(factor=4, channels=32, blocks=3)`) from scratch
in PyTorch, once on the current frame alone (--frames 1) and once on the current and the previous
frame stacked (--frames 2), with the same data, steps and seed, and scores both on held-out
frames of the same clip and on a second clip:
  - dry: PSNR-Y of the output against its input on clean frames (the previous frame clean too)
  - rain: PSNR-Y against the clean frame on rain rendered over them (the previous frame rainy,
    with its own streaks: `derain synth` moves each layer by its fall speed from frame to frame)

Data (rendered by `derain synth`, which draws every streak layer afresh per video frame):
  derain synth --clean DATA/clean-driving/udacity/highway-960x540.mp4 --out runs/tv960 \
    --preset mixed --seed 31
  derain synth --clean DATA/clean-driving/udacity/highway-1280x720.mp4 --out runs/tv720 \
    --preset mixed --seed 32
Training frames: runs/tv960 frames 1..180; validation: its frames 182..220 and all of runs/tv720.
No dev set is read.

Needs torch, numpy and pillow: the torch of `make setup`'s .venv with pillow from any venv of the
same Python, e.g.
  python3 -m venv /tmp/pil && /tmp/pil/bin/pip install pillow numpy
  PYTHONPATH=.venv/lib/python3.11/site-packages /tmp/pil/bin/python scripts/spike-multiframe.py \
    --frames 2 --steps 6000 --out runs/spike-f2.json
"""
import argparse
import glob
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def load(folder):
    files = sorted(glob.glob(os.path.join(folder, "*.png")))
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


class Lite(torch.nn.Module):
    def __init__(self, frames, factor=4, channels=32, blocks=3):
        super().__init__()
        self.f = factor
        k = 3 * factor * factor
        self.head = torch.nn.Conv2d(k * frames, channels, 3, padding=1)
        self.res = torch.nn.ModuleList(
            torch.nn.ModuleList([torch.nn.Conv2d(channels, channels, 3, padding=1) for _ in range(2)])
            for _ in range(blocks)
        )
        self.tail = torch.nn.Conv2d(channels, k, 3, padding=1)

    def forward(self, x):  # x: [N, 3*frames, H, W] in [0,1], current frame first
        h = F.relu(self.head(F.pixel_unshuffle(x * 2 - 1, self.f)))
        for c1, c2 in self.res:
            h = h + c2(F.relu(c1(h)))
        rain = F.pixel_shuffle(self.tail(h), self.f)
        return (x[:, :3] - rain).clamp(0, 1)


def luma(x):  # [..., 3, H, W] in [0,1] -> BT.601 Y in [16/255, 235/255]
    return (16 + 65.481 * x[:, 0] + 128.553 * x[:, 1] + 24.966 * x[:, 2]) / 255


def psnr_y(a, b):
    mse = ((luma(a) - luma(b)) ** 2).mean(dim=(1, 2)).clamp_min(1e-12)
    return (10 * torch.log10(1 / mse)).tolist()


def to_t(a):
    return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255


def stacked(frames_u8, t, frames):
    return np.concatenate([frames_u8[t - i] for i in range(frames)], axis=-1)


def evaluate(model, rainy, clean, ts, frames):
    dry, rain = [], []
    with torch.no_grad():
        for t in ts:
            h, w = clean.shape[1] // 4 * 4, clean.shape[2] // 4 * 4
            c = to_t(stacked(clean, t, frames)[None, :h, :w])
            r = to_t(stacked(rainy, t, frames)[None, :h, :w])
            dry += psnr_y(model(c), c[:, :3])
            rain += psnr_y(model(r), c[:, :3])
    return {
        "dry_mean": float(np.mean(dry)),
        "dry_worst": float(np.min(dry)),
        "rain_mean": float(np.mean(rain)),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, choices=[1, 2], required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--train", default="runs/tv960")
    ap.add_argument("--second", default="runs/tv720")
    ap.add_argument("--dry-fraction", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    rainy, clean = load(os.path.join(a.train, "rainy")), load(os.path.join(a.train, "clean"))
    rainy2, clean2 = load(os.path.join(a.second, "rainy")), load(os.path.join(a.second, "clean"))
    train_ts, val_ts = range(1, 181), range(182, len(clean))
    model = Lite(a.frames)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    half = a.steps // 2
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if s < half else max(0.0, (a.steps - s) / (a.steps - half))
    )
    crop, batch = 128, 8
    h, w = clean.shape[1:3]
    started = time.time()
    for step in range(a.steps):
        xs, ys = [], []
        for _ in range(batch):
            t = int(rng.choice(train_ts))
            y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
            src = clean if rng.random() < a.dry_fraction else rainy
            x = stacked(src, t, a.frames)[y0 : y0 + crop, x0 : x0 + crop]
            y = clean[t, y0 : y0 + crop, x0 : x0 + crop]
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            xs.append(x)
            ys.append(y)
        x, y = to_t(np.ascontiguousarray(np.stack(xs))), to_t(np.ascontiguousarray(np.stack(ys)))
        loss = (model(x) - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 500 == 0:
            print(f"step {step + 1}: loss {loss.item():.4f}", flush=True)
    result = {
        "frames": a.frames,
        "steps": a.steps,
        "seconds": time.time() - started,
        "held_out_frames_of_the_training_clip": evaluate(model, rainy, clean, val_ts, a.frames),
        "second_clip": evaluate(model, rainy2, clean2, range(1, len(clean2)), a.frames),
    }
    print(json.dumps(result, indent=1))
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
