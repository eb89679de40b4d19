"""Inference and the numpy image operations every stage shares (resize, colour, metrics, image files)."""
