"""`python -m vdsr.train`: vdsr-train as a module, the form torchrun starts (one process per rank):

torchrun --nproc-per-node 2 -m vdsr.train --output runs/x --data-dir ../shared/datasets
"""

from vdsr.train.cli import app

if __name__ == "__main__":
    app(prog_name="vdsr-train")
