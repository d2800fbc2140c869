"""Suite files: every bad key or value is named in one readable message."""

import pytest

from bench.run.config import ProtocolConfig, TrainConfig, build_config, load_suite, parse_suite
from bench.errors import DrbenchError

BASE = {"name": "t", "datasets": ["synthetic"], "seeds": [0], "models": {"pop": {"model": "pop"}}}


def suite(**changes):
    return parse_suite({**BASE, **changes}, "test.yaml")


def test_valid_suite_parses_with_defaults():
    parsed = suite(models={"s": {"model": "sasrec", "params": {"max_len": 20}, "overrides": {"ml-1m": {"params": {"max_len": 200}}}}})
    spec = parsed.models[0]
    assert spec.for_dataset("ml-1m")[0] == {"max_len": 200}
    assert spec.for_dataset("ml-100k")[0] == {"max_len": 20}
    assert parsed.protocol == ProtocolConfig()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"modles": {}}, "unknown key.*modles"),
        ({"models": {"x": {"model": "nope"}}}, "unknown model 'nope'.*sasrec"),
        ({"models": {"s": {"model": "sasrec", "params": {"hidden": 8}}}}, "unknown key.*hidden.*valid keys.*hidden_size"),
        ({"models": {"s": {"model": "sasrec", "params": {"max_len": "long"}}}}, "max_len must be of type int"),
        ({"models": {"s": {"model": "sasrec", "params": {"max_len": 0}}}}, "max_len must be >= 1"),
        ({"training": {"lr": -0.1}}, "training.lr must be > 0"),
        ({"protocol": {"ks": [10, 0]}}, "protocol.ks"),
        ({"protocol": {"split": "random"}}, "protocol.split must be one of"),
        ({"protocol": {"monitor": "ndcg@50"}}, "protocol.monitor"),
        ({"seeds": ["a"]}, "seeds must be a non-empty list of int"),
        ({"models": {"s": {"model": "sasrec", "overrides": {"ml-1m": {"params": {"max_len": -1}}}}}}, "overrides.ml-1m.params.*max_len"),
        ({"models": {"s": {"model": "sasrec", "steps_sweep": [1, 2]}}}, "steps_sweep: model 'sasrec' has no denoising steps"),
        ({"models": {"d": {"model": "diffsasrec", "steps_sweep": [1, 1]}}}, "steps_sweep lists a step count twice"),
        ({"models": {"d": {"model": "diffsasrec", "steps_sweep": [4, 0]}}}, r"steps_sweep \(steps=0\).*steps must be >= 1"),
        ({"models": {"d": {"model": "diffsasrec", "steps_sweep": "1,2"}}}, "steps_sweep must be a non-empty list of int"),
        ({"models": {"s": {"model": "sasrec", "datasets": ["ml-1m"]}}}, r"models.s.datasets: ml-1m not among the suite's datasets"),
        ({"models": {"s": {"model": "sasrec", "datasets": []}}}, "models.s.datasets must be a non-empty list"),
        ({"report": {"metrics": ["ndcg@50"]}}, r"report.metrics ndcg@50: their K is not in protocol.ks"),
        ({"report": {"metrics": ["auc@10"]}}, "report.metrics: 'auc@10' is not NAME@K"),
        ({"report": {"layout": "wide"}}, "report.layout must be one of"),
        ({"report": {"published": "nobody-2099"}}, "unknown published source 'nobody-2099'"),
        ({"report": {"published": "diffurec-tois2023", "published_models": {"x": "DiffuRec"}}}, "report.published_models: x not among"),
    ],
)
def test_bad_suites_name_the_problem(changes, message):
    with pytest.raises(DrbenchError, match=message):
        suite(**changes)


def test_duplicate_yaml_keys_are_rejected(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nname: b\ndatasets: [synthetic]\nmodels: {pop: {model: pop}}\n")
    with pytest.raises(DrbenchError, match="duplicate key 'name'.*line 2"):
        load_suite(str(path))


def test_unknown_suite_lists_available():
    with pytest.raises(DrbenchError, match="unknown suite 'nope'.*smoke"):
        load_suite("nope")


def test_int_is_accepted_where_float_is_expected():
    assert build_config(TrainConfig, {"lr": 1}, "training").lr == 1.0


def test_shipped_suites_parse():
    from bench.run.config import SUITES_DIR

    for path in sorted(SUITES_DIR.glob("*.yaml")):
        assert load_suite(path.stem).name == path.stem


@pytest.mark.parametrize("name", ["paper", "full", "diffusion"])
def test_diffurec_runs_its_official_recipe_and_a_labelled_init_variant(name):
    models = {spec.label: spec for spec in load_suite(name).models}
    official, variant = models["diffurec"], models["diffurec-init0.02"]
    training = build_config(TrainConfig, {**load_suite(name).training, **official.training}, "training")
    assert (training.batch_size, training.lr, training.epochs, training.lr_step_every, training.lr_step_factor,
            training.eval_every, training.patience, training.checkpoint) == (512, 1e-3, 500, 100, 0.1, 20, 4, "any_metric")
    assert official.params.get("item_init_std", 1.0) == 1.0
    assert variant.training == official.training and variant.steps_sweep == official.steps_sweep
    assert variant.params == {**official.params, "item_init_std": 0.02}


def test_a_model_can_be_limited_to_some_datasets():
    from bench.run.engine import trial_specs

    parsed = suite(datasets=["synthetic", "ml-100k"], models={"pop": {"model": "pop"}, "s": {"model": "sasrec", "datasets": ["ml-100k"]}})
    keys = {(spec["dataset"], spec["label"]) for spec in trial_specs(parsed)}
    assert keys == {("synthetic", "pop"), ("ml-100k", "pop"), ("ml-100k", "s")}


def test_report_metrics_default_to_the_protocol_cutoffs():
    assert suite().report.metrics == ["hr@10", "ndcg@10", "hr@20", "ndcg@20"]
    assert suite(protocol={"ks": [5, 10]}).report.metrics == ["hr@10", "ndcg@10"]
    assert suite(protocol={"ks": [1, 3], "monitor": "ndcg@3"}).report.metrics == ["hr@1", "ndcg@1", "hr@3", "ndcg@3"]


def test_protocol_dedup_is_a_suite_key_with_the_source_default_when_absent():
    assert suite().protocol.dedup is None  # the source's default: "first", "keep" for seq: files
    assert suite(protocol={"dedup": "keep"}).protocol.dedup == "keep"
    with pytest.raises(DrbenchError, match="protocol.dedup must be one of first, last, keep, got 'sometimes'"):
        suite(protocol={"dedup": "sometimes"})


def test_a_tab_in_a_suite_file_is_one_line_with_its_position_and_the_fix(tmp_path):
    path = tmp_path / "tabs.yaml"
    path.write_text("name: t\ndatasets: [synthetic]\nmodels:\n\tpop: {model: pop}\n")
    with pytest.raises(DrbenchError) as error:
        load_suite(str(path))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"suite file {path} is not valid YAML: line 4, column 1: ")
    assert message.endswith("(YAML does not allow tabs for indentation; use spaces)")
    path.write_text("name: t\ndatasets: [synthetic\nmodels: {pop: {model: pop}}\n")
    with pytest.raises(DrbenchError, match=r"not valid YAML: line \d+, column \d+: ") as error:
        load_suite(str(path))
    assert "\n" not in str(error.value) and "use spaces" not in str(error.value)


def test_a_generator_whose_lists_are_shorter_than_the_monitor_k_is_refused():
    suite = {"name": "x", "datasets": ["synthetic"], "models": {"t": {"model": "tiger", "params": {"beam_size": 5}}}}
    with pytest.raises(DrbenchError, match=r"models.t.params.beam_size 5 is below the K of protocol.monitor \(ndcg@10\)"):
        parse_suite(suite)
    parse_suite({**suite, "protocol": {"monitor": "ndcg@5"}})
