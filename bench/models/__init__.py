"""What every model builds on: the ``Recommender`` interface and registry, shared layers, semantic IDs.

Rule: models never compute metrics. A model scores or generates; the
protocol (``bench.protocol``) judges it. Models themselves live in
``baselines/`` and ``diffusion/``, one file each, registered by name.
"""
