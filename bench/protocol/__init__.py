"""The protocol: splits, metrics, evaluation and latency, the same for every model.

Rule: the protocol never knows which model it evaluates. It talks to a
model only through the ``Recommender`` interface (``score`` a batch of
histories, or ``generate`` ranked lists) and never imports a model.
"""
