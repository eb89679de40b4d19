"""`vdsr-serve`: upscaling over HTTP on Ray Serve (the `serve` extra; never imported without it)."""
