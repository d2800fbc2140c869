"""Reports: tables (Markdown, LaTeX, CSV), significance tests and figures.

Rule: reports read saved trials only (``bench.records``), never live models;
anything a table shows must be in a trial's record or per-user arrays.
"""
