"""VDSR trained on one GPU within a fixed wall-clock budget, in one prepared call (issue 19). Not yet run on a GPU: no
GPU has been lent to this project; the CPU `--dry-run` is what the test suite runs.

    python -m vdsr.train.gpu_train pack --data-dir ../shared/datasets --out gpu_carry/pack.npz      # here, once
    python -m vdsr.train.gpu_train train --pack gpu_carry/pack.npz --minutes 8.5 --out "$OUT"     # on the GPU
    python -m vdsr.train.gpu_train train --pack P --out DIR --dry-run                               # CPU, seconds

`pack` carries the 291 training images (T91 + BSD200) compactly, as the protocol's Y planes in uint8 (one compressed
array, about 25 MB), and Set5's HR Y and ILR at x2/x3/x4 for validation: checkpoints are chosen and tuned on Set5
only (Set14 and B100 are scored afterwards on the CPU, with vdsr-bench).

`train` builds every batch on the device, with no Python loop per patch: crops are one gather from the flat uint8
array (random images weighted by their area, random corners), the 8 flips/transposes are chosen per patch with
masks, and the protocol's degradation (MATLAB bicubic down by the scale, then up) is two matrix products per side,
the same weights as vdsr.runtime.resize. Every batch mixes x2, x3 and x4 in thirds. The recipe for a fixed budget:
bf16 autocast, channels_last, cudnn benchmark; AdamW with a linear warm-up, then a cosine to zero timed so that it
ends when the budget does (the step time is measured during the warm-up); an EMA of the weights, which is what is
validated and saved; L1 loss, then MSE for the last fifth. It writes `vdsr.safetensors` (the EMA weights), the log
(JSON lines) and `gpu_train.json`: GPU, driver, torch/CUDA/cuDNN versions, the command, patches/s, the TFLOP/s that
makes and its fraction of a bf16 matrix product's rate measured in the same call, Set5 PSNR over time and the wall
time to first reach the paper's 37.53 dB on Set5 x2.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vdsr.bench.datasets import resolve_dataset
from vdsr.bench.protocol import degrade, ground_truth_y
from vdsr.networks import VDSR, VDSRConfig
from vdsr.runtime.images import load_image
from vdsr.runtime.resize_torch import resize_matrix
from vdsr.weights import save_weights

SCALES = (2, 3, 4)
PAPER_SET5_X2 = 37.53
FLOP_PER_PIXEL = 2 * 9 * (64 + 18 * 64 * 64 + 64)  # VDSR forward, 20 layers of 3x3 convolutions (1.33 MFLOP)


def flat(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Images of any sizes as one flat array and their (offset, height, width) rows."""
    shapes = np.array([a.shape for a in arrays], dtype=np.int64).reshape(-1, 2)
    offsets = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])[:-1]])
    return np.concatenate([a.ravel() for a in arrays]), np.column_stack([offsets, shapes])


def pack(data_dir: Path | None, out: Path, *, limit: int | None = None) -> None:
    train = [p for name in ("T91", "BSD200") for p in resolve_dataset(name, data_dir).files][:limit]
    train_y = [ground_truth_y(load_image(p).color, 1).astype(np.uint8) for p in train]
    arrays: dict[str, np.ndarray] = {}
    arrays["train"], arrays["train_index"] = flat(train_y)
    set5_files = resolve_dataset("Set5", data_dir).files
    set5 = [load_image(p).color for p in (set5_files[:1] if limit else set5_files)]  # tests: one image
    for scale in SCALES:
        degraded = [degrade(color, scale) for color in set5]
        arrays[f"set5_hr_x{scale}"], arrays[f"set5_index_x{scale}"] = flat([d.hr_y.astype(np.uint8) for d in degraded])
        arrays[f"set5_ilr_x{scale}"], _ = flat([d.ilr().astype(np.float32) for d in degraded])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]  # numpy's stubs take the first as allow_pickle
    print(f"packed {len(train)} training images ({arrays['train'].size / 1e6:.1f} MP) and Set5 into {out} "
          f"({out.stat().st_size / 2**20:.1f} MiB)")  # fmt: skip


def dihedral(patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each square patch (B, P, P) flipped and transposed at random: the 8 rotations and reflections."""
    masks = torch.rand((3, patches.shape[0], 1, 1), generator=generator, device=patches.device) < 0.5
    patches = torch.where(masks[0], patches.flip(-1), patches)
    patches = torch.where(masks[1], patches.flip(-2), patches)
    return torch.where(masks[2], patches.transpose(-1, -2), patches)


class Batches:
    """Random (ILR, HR) batches built on the device from the packed training images."""

    def __init__(self, data: dict[str, np.ndarray], *, patch: int, device: torch.device, seed: int) -> None:
        self.patch, self.device = patch, device
        index = data["train_index"]
        usable = (index[:, 1] >= patch) & (index[:, 2] >= patch)
        self.flat = torch.from_numpy(data["train"]).to(device)
        self.index = torch.from_numpy(index[usable]).to(device)
        weights = (self.index[:, 1] - patch + 1) * (self.index[:, 2] - patch + 1)
        self.weights = weights.double() / weights.sum()
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.grid = torch.arange(patch, device=device)
        self.matrices = {s: (torch.from_numpy(resize_matrix(patch, patch // s, 1 / s)).float().to(device),
                             torch.from_numpy(resize_matrix(patch // s, patch, s)).float().to(device))
                         for s in SCALES}  # fmt: skip

    def __call__(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.index[torch.multinomial(self.weights, size, replacement=True, generator=self.generator)]
        offset, height, width = rows[:, 0], rows[:, 1], rows[:, 2]
        top = (torch.rand(size, generator=self.generator, device=self.device) * (height - self.patch + 1)).long()
        left = (torch.rand(size, generator=self.generator, device=self.device) * (width - self.patch + 1)).long()
        where = (offset[:, None, None] + (top[:, None, None] + self.grid[None, :, None]) * width[:, None, None]
                 + left[:, None, None] + self.grid[None, None, :])  # fmt: skip
        hr = dihedral(self.flat[where].float() / 255, self.generator)
        parts = hr.chunk(len(SCALES))
        ilr = torch.cat([up @ (down @ part @ down.T) @ up.T for part, (down, up) in
                         zip(parts, (self.matrices[s] for s in SCALES), strict=False)])  # fmt: skip
        return ilr[:, None], hr[:, None]


def validate(model: torch.nn.Module, data: dict[str, np.ndarray], device: torch.device) -> dict[int, float]:
    """Mean PSNR on Set5 at each scale (Y, `scale` pixels shaved, as the bench)."""
    scores = {}
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for scale in SCALES:
            values = []
            index = data[f"set5_index_x{scale}"]
            for offset, height, width in index:
                ilr = torch.from_numpy(data[f"set5_ilr_x{scale}"][offset : offset + height * width]).to(device)
                hr = torch.from_numpy(data[f"set5_hr_x{scale}"][offset : offset + height * width]).to(device)
                sr = model(ilr.view(1, 1, height, width)).float().clamp(0, 1)[0, 0] * 255
                diff = (sr - hr.view(height, width).float())[scale:-scale, scale:-scale]
                values.append(10 * math.log10(255**2 / max(float((diff**2).mean()), 1e-12)))
            scores[scale] = float(np.mean(values))
    return scores


def matmul_tflops(device: torch.device, *, size: int = 8192, repeats: int = 10) -> float:
    """A bf16 matrix product's rate on random data here: the ceiling the training's rate is compared with."""
    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def environment(device: torch.device) -> dict[str, object]:
    command = shlex.join([sys.executable, "-m", "vdsr.train.gpu_train", *sys.argv[1:]])
    cudnn = torch.backends.cudnn.version()  # type: ignore[no-untyped-call]
    env: dict[str, object] = {"command": command, "torch": torch.__version__, "cuda": torch.version.cuda,
                              "cudnn": cudnn, "device": str(device)}  # fmt: skip
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        env["driver"] = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()
    return env


def train(pack_path: Path, out: Path, *, minutes: float, dry_run: bool) -> dict[str, object]:
    device = torch.device("cpu" if dry_run else "cuda")
    torch.backends.cudnn.benchmark = True
    data = dict(np.load(pack_path))
    config = VDSRConfig(depth=3, channels=8) if dry_run else VDSRConfig()
    patch, batch, warmup, steps_cap = (24, 6, 2, 4) if dry_run else (96, 192, 300, 10**9)
    model = VDSR(config).to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    torch.nn.init.zeros_(last.weight)  # the untrained network returns its input (the ILR), as the fast recipe starts
    ema = VDSR(config).to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99))
    batches = Batches(data, patch=patch, device=device, seed=0)
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "gpu_train_log.jsonl").open("w", encoding="utf-8")
    peak = 1e-3
    budget = minutes * 60
    start = time.perf_counter()
    total = steps_cap
    step, reached, history = 0, None, []
    last_validation = start
    while step < total and time.perf_counter() - start < budget:
        ilr, hr = (t.contiguous(memory_format=torch.channels_last) for t in batches(batch))
        if step == warmup and not dry_run:  # the measured step time fixes where the schedule ends
            per_step = (time.perf_counter() - start) / warmup
            total = warmup + int((budget - (time.perf_counter() - start)) / per_step * 0.95)
        progress = 0.0 if step < warmup else (step - warmup) / max(1, total - warmup)
        lr = peak * (step + 1) / warmup if step < warmup else peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            sr = model(ilr)
        error = sr.float() - hr
        loss = (error**2).mean() if progress > 0.8 else error.abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - 0.999)
        step += 1
        now = time.perf_counter()
        if dry_run or now - last_validation > 45 or step >= total:
            last_validation = now
            scores = validate(ema, data, device)
            record = {"step": step, "seconds": round(now - start, 1), "lr": lr, "loss": float(loss.detach()),
                      "set5": scores, "patches_per_second": step * batch / (now - start)}  # fmt: skip
            history.append(record)
            log.write(json.dumps(record) + "\n")
            log.flush()
            if reached is None and scores[2] >= PAPER_SET5_X2:
                reached = now - start
    log.close()
    seconds = time.perf_counter() - start
    rate = step * batch / seconds
    tflops = rate * patch**2 * FLOP_PER_PIXEL * 3 / 1e12  # forward + backward (about twice the forward)
    ceiling = matmul_tflops(device) if device.type == "cuda" else None
    save_weights(out / "vdsr.safetensors", ema, list(SCALES))
    summary: dict[str, object] = {
        "environment": environment(device), "steps": step, "batch": batch, "patch": patch, "seconds": seconds,
        "patches_per_second": rate, "tflops": tflops, "bf16_matmul_tflops": ceiling,
        "fraction_of_matmul_peak": tflops / ceiling if ceiling else None,
        "seconds_to_paper_set5_x2": reached, "final_set5": history[-1]["set5"] if history else None,
    }  # fmt: skip
    (out / "gpu_train.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="the training images and Set5, packed to carry to the GPU")
    packing.add_argument("--data-dir", type=Path)
    packing.add_argument("--out", type=Path, required=True)
    packing.add_argument("--limit", type=int, help="only this many training images (tests)")
    training = commands.add_parser("train", help="train within --minutes on the GPU (or --dry-run on the CPU)")
    training.add_argument("--pack", type=Path, required=True)
    training.add_argument("--out", type=Path, required=True)
    training.add_argument("--minutes", type=float, default=8.5)
    training.add_argument("--dry-run", action="store_true", help="a tiny model for a few steps on the CPU")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.data_dir, args.out, limit=args.limit)
        return
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU here; --dry-run runs a tiny model on the CPU")
    summary = train(args.pack, args.out, minutes=args.minutes, dry_run=args.dry_run)
    print(json.dumps({k: v for k, v in summary.items() if k != "environment"}, indent=1))


if __name__ == "__main__":
    main()
