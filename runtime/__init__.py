"""The inference runtime: image files and operations (resize, colour, tiling), the backends behind one interface,
the Upscaler API and folder runs, and `vdsr-run`."""
