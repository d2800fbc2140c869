"""The run folder: finished trials as records, and the fingerprint that keeps runs from being mixed.

Rule: records are the only thing a report reads; a record says how it was
produced (protocol flags, split fingerprint, code version, hardware).
"""
