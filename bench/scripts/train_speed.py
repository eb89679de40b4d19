"""Training throughput (patches/s) of VDSR and SRCNN: fp32 vs bf16 autocast, contiguous vs channels_last.

Run: python -m vdsr.bench.scripts.train_speed --json bench/results/train_speed_<machine>.json
Each setting: a few warm-up steps, then timed AdamW steps on random 41x41 patches (the data does not change the cost).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import torch
import typer

from vdsr.bench.report import environment
from vdsr.files import atomic_write_text
from vdsr.networks import build_model

app = typer.Typer(add_completion=False, help=__doc__)


def patches_per_second(
    model_name: str, *, bf16: bool, channels_last: bool, batch: int, patch: int, steps: int
) -> float:
    torch.manual_seed(0)
    model = build_model(model_name)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)  # type: ignore[call-overload]  # missing from torch's stubs
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, patch, patch).to(memory_format=memory_format)
    y = torch.rand(batch, 1, patch, patch).to(memory_format=memory_format)
    start = 0.0
    for i in range(steps + 3):
        if i == 3:  # the first steps pay for allocations and kernel selection
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = torch.nn.functional.mse_loss(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


@app.command()
def main(
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the results.")],
    batch: Annotated[int, typer.Option("--batch")] = 64,
    patch: Annotated[int, typer.Option("--patch")] = 41,
    steps: Annotated[int, typer.Option("--steps")] = 10,
) -> None:
    rows = []
    for model_name in ("vdsr", "srcnn"):
        for bf16 in (False, True):
            for channels_last in (False, True):
                rate = patches_per_second(
                    model_name, bf16=bf16, channels_last=channels_last, batch=batch, patch=patch, steps=steps
                )
                rows.append(
                    {"model": model_name, "bf16": bf16, "channels_last": channels_last, "patches_per_second": rate}
                )
                typer.echo(f"{model_name:6} bf16={bf16!s:5} channels_last={channels_last!s:5} {rate:8.1f} patches/s")
    env = environment(
        f"python -m vdsr.bench.scripts.train_speed --json {json_path} --batch {batch} --patch {patch} --steps {steps}"
    )
    settings = {
        "batch": batch,
        "patch": patch,
        "steps": steps,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    atomic_write_text(
        json_path, json.dumps({"results": rows, "settings": settings, "environment": env}, indent=1) + "\n"
    )


if __name__ == "__main__":
    app()
