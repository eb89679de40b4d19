"""The evaluation protocol of the VDSR paper and the `vdsr-bench` harness."""
