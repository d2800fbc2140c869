"""The protocol: splits, metrics, evaluation and latency, the same for every model, and the files that carry a split
to other frameworks and their ranked lists back (``export``, ``ranked_lists``).

Rule: the protocol never knows which model it evaluates. It talks to a
model only through the ``Recommender`` interface (``score`` a batch of
histories, or ``generate`` ranked lists) and never imports a model.
"""
