"""Where the tests find real data: the data root the harness itself would use."""

from datasets import resolve_data_root

# $DRBENCH_DATA, else ../shared/data next to the repository (the CI mirror), else the user cache.
MIRROR = resolve_data_root()
