"""drbench: diffusion recommenders against strong baselines, under one protocol.

The flow, in folder names:

    run_bench.py          command line
    bench/suites/         suite files (YAML), read by bench/run/config.py
    bench/run/            trials: the execution core (engine) on Ray Tune or in-process
    baselines/ diffusion/ the models, on bench/models/ (interface, registry, shared layers)
    bench/protocol/       splits, metrics, evaluation, latency: the same for every model
    bench/records/        the run folder: one record per finished trial
    bench/report/         tables, significance tests, figures, from records only

Beside them: bench/data/ (datasets from their cards in datasets/), bench/perf/
(benchmark scripts), and small shared modules (errors, files, checked, provenance).
"""
