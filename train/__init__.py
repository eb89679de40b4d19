"""Training VDSR and SRCNN (PyTorch): config and recipes, data, schedule, the loop, checkpoints, validation."""
