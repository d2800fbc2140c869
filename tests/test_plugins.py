"""Plugins: the user's own model code, by file or module, its errors, its search space and its place in the fingerprint."""

import json
import re

import pandas as pd
import pytest

import run_bench
from bench.errors import DrbenchError
from bench.models.base import model_entry
from bench.plugins import code_sha256, import_plugins, load_plugins
from bench.run.config import parse_suite

pytestmark = pytest.mark.usefixtures("plugin_sandbox")

# A complete plugin: a model that scores every item by its id (so it is deterministic and needs no training).
PLUGIN = '''
from dataclasses import dataclass

import torch

from bench.models.base import FitSummary, Recommender, register_model


@dataclass
class ByIdConfig:
    scale: float = 1.0


@register_model("{name}", ByIdConfig{extra})
class ById(Recommender):
    def fit(self, train, trainer, validate):
        metrics = validate(self)
        return FitSummary(epochs_run=1, best_epoch=1, history=[{{"epoch": 1, **{{f"valid_{{k}}": v for k, v in metrics.items()}}}}])

    def score(self, histories):
        return self.config.scale * torch.arange(self.n_items + 1, dtype=torch.float32).expand(histories.shape[0], -1)
'''


def write_plugin(folder, file="by_id.py", name="by_id", extra="", body=PLUGIN):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file
    path.write_text(body.format(name=name, extra=extra))
    return path


def run(capsys, *argv):
    code = run_bench.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def suite_text(plugins=""):
    return f"name: plugged\n{plugins}datasets: [synthetic]\nseeds: [0]\ntraining: {{epochs: 1}}\nmodels:\n  pop: {{model: pop}}\n  by-id: {{model: by_id}}\n"


def test_a_file_plugin_registers_its_model_for_list_models_and_suites(tmp_path, capsys):
    path = write_plugin(tmp_path / "elsewhere")
    code, out, err = run(capsys, "--plugin", path, "--list-models")
    assert code == 0, err
    assert re.search(r"^by_id +scale=1\.0$", out, re.M) and re.search(r"^sasrec ", out, re.M)
    suite = parse_suite({"name": "x", "datasets": ["synthetic"], "models": {"b": {"model": "by_id", "params": {"scale": 2.0}}}},
                        plugins=load_plugins([str(path)]))
    assert [p.module for p in suite.plugins] == ["by_id"] and suite.plugins[0].sha256 == code_sha256(path)
    with pytest.raises(DrbenchError, match=r"models.b.params.scale must be of type float, got 'big'"):
        parse_suite({"name": "x", "datasets": ["synthetic"], "models": {"b": {"model": "by_id", "params": {"scale": "big"}}}})


def test_a_suite_names_its_plugins_relative_to_the_suite_file(tmp_path, monkeypatch):
    from bench.run.config import load_suite

    write_plugin(tmp_path / "suites" / "code")
    suite_file = tmp_path / "suites" / "plugged.yaml"
    suite_file.write_text(suite_text("plugins: [code/by_id.py]\n"))
    monkeypatch.chdir(tmp_path)  # not the suite's folder
    suite = load_suite(str(suite_file))
    assert [(p.module, p.source) for p in suite.plugins] == [("by_id", "suites/code/by_id.py")]
    # the same file named by --plugin too is one plugin
    assert len(load_suite(str(suite_file), ["suites/code/by_id.py"]).plugins) == 1


def test_a_module_plugin_is_imported_by_name_and_hashed_over_its_whole_package(tmp_path, monkeypatch):
    package = tmp_path / "my_models_pkg"
    write_plugin(package, file="models.py", name="by_id_module")
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    [plugin] = load_plugins(["my_models_pkg.models"])
    assert (plugin.module, plugin.source) == ("my_models_pkg.models", "my_models_pkg.models")
    assert model_entry("by_id_module").model_class.__module__ == "my_models_pkg.models"
    before = code_sha256(package)
    assert plugin.sha256 == before
    (package / "helpers.py").write_text("X = 1\n")  # any file of the package is code the workers receive
    assert code_sha256(package) != before


@pytest.mark.parametrize("plugin, message", [
    ("missing.py", r"--plugin: plugin file missing.py does not exist"),
    ("no_such_package.models", r"plugin no_such_package.models: no module named 'no_such_package' here; a module plugin must be importable"),
    ("raises.py", r"plugin .*raises.py failed to import at raises.py line 3: NameError: name 'undefined_name' is not defined \(--debug"),
    ("broken.py", r"plugin .*broken.py failed to import at broken.py line 2: SyntaxError: "),
    ("clash.py", r"plugin .*clash.py: model name 'sasrec' is registered twice: by baselines.sasrec.SASRec and by clash.ById; "
                 r"give one of them another name"),
    ("json.py", r"plugin json.py would be imported as 'json', which is already a Python module here \(.*json\); rename"),
])
def test_a_bad_plugin_is_one_line_naming_it_and_exit_status_2(tmp_path, capsys, monkeypatch, plugin, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raises.py").write_text("import math\n\nundefined_name + 1\n")
    (tmp_path / "broken.py").write_text("x = 1\ndef f(:\n")
    write_plugin(tmp_path, file="clash.py", name="sasrec")
    write_plugin(tmp_path, file="json.py")
    code, out, err = run(capsys, "--plugin", plugin, "--list-models")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_debug_shows_the_plugins_own_traceback(tmp_path, capsys):
    (tmp_path / "raises.py").write_text("import math\n\nundefined_name + 1\n")
    code, _, err = run(capsys, "--plugin", tmp_path / "raises.py", "--list-models", "--debug")
    assert code == 2 and "Traceback" in err and 'raises.py", line 3' in err


def test_a_suite_with_a_missing_plugin_or_a_bad_plugins_key_stops_before_any_run_folder(tmp_path, capsys):
    for plugins, message in [("plugins: [gone.py]\n", r"suite .*plugged.yaml: plugin file gone.py \(relative to .*\) does not exist"),
                             ("plugins: by_id.py\n", r"plugins in suite .* must be a list of .py files")]:
        suite = tmp_path / "plugged.yaml"
        suite.write_text(suite_text(plugins))
        code, _, err = run(capsys, "--suite", suite, "--results-dir", tmp_path / "results")
        assert code == 2 and re.search(message, err), err
        assert not (tmp_path / "results").exists()


def test_a_model_without_a_search_space_runs_but_tune_refuses_it_before_any_run_folder(tmp_path, capsys):
    from bench.run.spaces import search_space
    from bench.run.config import SweepConfig, TrainConfig

    suite = tmp_path / "plugged.yaml"
    suite.write_text(suite_text("plugins: [by_id.py]\n"))
    parsed = parse_suite({"name": "x", "datasets": ["synthetic"], "models": {"b": {"model": "by_id"}}},
                         plugins=load_plugins([str(write_plugin(tmp_path))]))  # no --tune: fine
    assert search_space(parsed.models[0], SweepConfig(), set(TrainConfig.__dataclass_fields__), required=False) is None
    code, _, err = run(capsys, "--suite", suite, "--tune", "--results-dir", tmp_path / "results")
    assert code == 2 and "--tune: model 'by_id' has no search space; give the suite a tune.spaces.by-id section" in err, err
    assert not (tmp_path / "results").exists()


def test_a_plugin_brings_its_own_search_space_checked_like_spaces_yaml(tmp_path):
    from bench.run.config import SweepConfig, TrainConfig
    from bench.run.spaces import search_space

    write_plugin(tmp_path, extra=', search_space={"params.scale": {"uniform": [0.5, 2.0]}, "training.lr": {"loguniform": [1e-4, 1e-2]}}')
    load_plugins([str(tmp_path / "by_id.py")])
    suite = parse_suite({"name": "x", "datasets": ["synthetic"], "models": {"b": {"model": "by_id"}}})
    assert search_space(suite.models[0], SweepConfig(), set(TrainConfig.__dataclass_fields__)) == {
        "params.scale": {"uniform": [0.5, 2.0]}, "training.lr": {"loguniform": [1e-4, 1e-2]}}
    write_plugin(tmp_path, file="bad_space.py", name="bad_space", extra=', search_space={"params.size": {"choice": [1]}}')
    load_plugins([str(tmp_path / "bad_space.py")])
    with pytest.raises(DrbenchError, match=r"search_space of model 'bad_space' \(bad_space\): cannot tune 'params.size'; use params.<one of scale>"):
        parse_suite({"name": "x", "datasets": ["synthetic"], "models": {"b": {"model": "bad_space"}}})


def test_a_worker_refuses_plugin_code_that_is_not_the_drivers(tmp_path):
    [plugin] = load_plugins([str(write_plugin(tmp_path))])
    import_plugins([{"module": "by_id", "source": "by_id.py", "sha256": plugin.sha256}])  # the same code: fine
    with pytest.raises(DrbenchError, match=r"plugin by_id.py: the code imported as 'by_id' here \(sha256 [0-9a-f]{12}\) is not the driver's"):
        import_plugins([{"module": "by_id", "source": "by_id.py", "sha256": "0" * 64}])


def test_two_plugin_files_with_one_module_name_are_refused(tmp_path):
    first, second = write_plugin(tmp_path / "a"), write_plugin(tmp_path / "b", body=PLUGIN + "\n# another version\n")
    with pytest.raises(DrbenchError, match=r"plugins .*a/by_id.py and .*b/by_id.py would both be imported as module 'by_id'"):
        load_plugins([str(first), str(second)])
    # named in two places (--plugin and a suite's plugins:), the second load is caught too, by the code's digest
    from bench.plugins import merged

    with pytest.raises(DrbenchError, match=r"two different plugins would be imported as module 'by_id': by_id.py \(sha256 "):
        merged(load_plugins([str(first)]), load_plugins([str(second)]))


def test_a_run_records_its_plugins_without_machine_paths_and_resume_refuses_a_changed_plugin(tmp_path, capsys, monkeypatch):
    import bench.models.base as base

    path = write_plugin(tmp_path / "code")
    suite = tmp_path / "plugged.yaml"
    suite.write_text(suite_text())
    results = tmp_path / "results"
    code, out, err = run(capsys, "--suite", suite, "--plugin", path, "--results-dir", results, "--no-ray")
    assert code == 0, err
    [run_dir] = (results / "plugged").iterdir()
    trials = pd.read_csv(run_dir / "trials.csv").set_index("model")
    assert (trials["status"] == "ok").all() and trials.loc["by-id", "model_type"] == "by_id"
    metadata = (run_dir / "suite.json").read_text()
    assert str(tmp_path) not in metadata
    recorded = json.loads(metadata)
    assert recorded["config"]["plugins"] == [{"module": "by_id", "source": "by_id.py", "sha256": code_sha256(path)}]
    assert recorded["fingerprint"]["plugins"] == {"by_id": code_sha256(path)}

    code, out, _ = run(capsys, "--suite", suite, "--plugin", path, "--results-dir", results, "--no-ray", "--resume")
    assert code == 0 and "already finished; nothing to run" in out
    monkeypatch.delitem(base._REGISTRY, "by_id")  # as in a new process: without --plugin, nothing registers it
    code, _, err = run(capsys, "--suite", suite, "--results-dir", results, "--no-ray", "--resume")
    assert code == 2 and "unknown model 'by_id'" in err and "--plugin" in err, err
    code, out, err = run(capsys, "--report", run_dir)  # tables and report from the records alone: no plugin needed
    assert code == 0 and "by-id" in out, err
    path.write_text(path.read_text().replace("self.config.scale *", "-self.config.scale *"))
    code, _, err = run(capsys, "--suite", suite, "--plugin", path, "--results-dir", results, "--no-ray", "--resume")
    assert code == 2 and re.search(r"--resume: .* was run with other settings.*plugin by_id: run has code sha256 [0-9a-f]{12}, "
                                   r"now code sha256 [0-9a-f]{12}", err), err


def test_a_run_without_plugins_keeps_the_fingerprint_it_always_had():
    from bench.records.fingerprint import differences, run_fingerprint

    suite = parse_suite({"name": "x", "datasets": ["synthetic"], "models": {"p": {"model": "pop"}}})
    assert "plugins" not in run_fingerprint(suite, {}, [], tuned=False)
    recorded = {"plugins": {"by_id": "a" * 64}}
    assert differences(recorded, {}) == ["plugin by_id: run has code sha256 aaaaaaaaaaaa, now no such plugin"]
