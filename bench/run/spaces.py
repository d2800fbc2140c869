"""Search spaces for ``--tune``: the defaults in ``bench/spaces.yaml`` or a suite's ``tune.spaces``, checked, and as Ray Tune samplers."""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.errors import DrbenchError
from bench.models.base import model_entry

SPACES_FILE = Path(__file__).resolve().parents[1] / "spaces.yaml"
SAMPLERS = ("uniform", "loguniform", "quniform", "qloguniform", "randint", "lograndint", "qrandint", "choice")


def default_spaces() -> dict[str, dict]:
    with open(SPACES_FILE, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def search_space(spec, sweep, training_fields: set[str], required: bool = True) -> dict[str, dict] | None:
    """The flat search space of one model label ({"params.x" | "training.y": {sampler: args}}), checked.

    The suite's ``tune.spaces.<label>``, else the space the model was
    registered with (``register_model(..., search_space=...)``, how a plugin
    brings one), else ``bench/spaces.yaml``. Without any: an error if
    ``required`` (``--tune``), else None. ``spec`` is a suite's ``ModelSpec``,
    ``sweep`` its ``SweepConfig``; ``training_fields`` the names of
    ``TrainConfig`` (passed in, so that the suite format, which checks every
    space when a suite is read, can call this without an import cycle).
    """
    entry = model_entry(spec.model)
    if spec.label in sweep.spaces:
        space, where = sweep.spaces[spec.label] or {}, f"tune.spaces.{spec.label}"
    elif entry.search_space is not None:
        space, where = entry.search_space, f"search_space of model '{spec.model}' ({entry.model_class.__module__})"
    else:
        defaults = default_spaces()
        if spec.model not in defaults:
            if not required:
                return None
            raise DrbenchError(f"--tune: model '{spec.model}' has no search space; give the suite a tune.spaces.{spec.label} "
                               f"section, register the model with register_model(..., search_space={{...}}), "
                               f"or add one to bench/{SPACES_FILE.name}")
        space, where = defaults[spec.model] or {}, f"{SPACES_FILE.name}:{spec.model}"
    if not isinstance(space, dict):
        raise DrbenchError(f"{where} must map parameter names to samplers, got {space!r}")
    config_fields = set(entry.config_class.__dataclass_fields__)
    training_fields = set(training_fields) - {"epochs", "eval_every", "patience", "max_minutes"}
    for key, sampler in space.items():
        group, _, name = str(key).partition(".")
        allowed = config_fields if group == "params" else training_fields if group == "training" else None
        if allowed is None or name not in allowed:
            raise DrbenchError(f"{where}: cannot tune '{key}'; use params.<one of {', '.join(sorted(config_fields))}> "
                               f"or training.<one of {', '.join(sorted(training_fields))}>")
        if not (isinstance(sampler, dict) and len(sampler) == 1 and next(iter(sampler)) in SAMPLERS
                and isinstance(next(iter(sampler.values())), list)):
            raise DrbenchError(f"{where}.{key} must be one sampler with a list of arguments, e.g. {{loguniform: [1.0e-4, 1.0e-2]}}; "
                               f"samplers: {', '.join(SAMPLERS)}; got {sampler!r}")
        try:
            tune_space({key: sampler})
        except (TypeError, ValueError, AssertionError) as error:
            raise DrbenchError(f"{where}.{key}: bad arguments {sampler!r} ({error})") from None
        except ImportError:
            pass  # no Ray here (run_bench.py --no-ray): the sampler's arguments are checked when a sweep runs, which needs Ray
    return dict(space)


def tune_space(space: dict[str, dict]) -> dict:
    """Ray Tune's nested param_space {"params": {...}, "training": {...}} from a flat checked space."""
    from ray import tune

    nested: dict[str, dict] = {"params": {}, "training": {}}
    for key, sampler in space.items():
        group, _, name = key.partition(".")
        (kind, args), = sampler.items()
        nested[group][name] = tune.choice(args) if kind == "choice" else getattr(tune, kind)(*args)
    return {group: values for group, values in nested.items() if values}
