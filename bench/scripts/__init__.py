"""Measurement scripts: each runs as a program (`python -m vdsr.bench.scripts.NAME`) and writes its results file
under bench/results/. They sit on top of every layer: they may import anything, and no module imports them."""
