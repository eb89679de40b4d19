"""Training VDSR and SRCNN (PyTorch); arrives with the trainer issue."""
