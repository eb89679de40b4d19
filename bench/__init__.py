"""The evaluation protocol of the VDSR paper (degradation, metrics, data sets, its Table 3), the harness that scores
methods through the runtime's backends, `vdsr-bench`, and the benchmark scripts that write bench/results."""
