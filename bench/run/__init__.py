"""Running suites: suite files, trials, training, and one execution core with two back-ends (Ray Tune, in-process).

Flow: ``config`` reads a suite; ``engine`` turns it into trials and runs
them on a back-end (``ray_backend`` or ``local_backend``); a trial
(``trial``) trains a model (``trainer``), tests it through the protocol and
hands back a record, which the engine writes into the run folder
(``bench.records``). ``sweep`` searches hyperparameters first (``--tune``).
"""
