import pandas as pd

from bench.report.machines import machine_letters, machine_marker, machine_of, machines_sentence


def _trials(hardware: list[str], status: list[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame({"dataset": "toy", "model": ["pop", "pop", "sasrec", "sasrec", "diffurec"], "hardware": hardware,
                         "status": status or ["ok"] * 5})


def test_machines_are_lettered_in_order_of_first_appearance_and_split_seeds_read_a_plus_b():
    frame = _trials(["CPU one", "CPU one", "CPU one", "CPU two", "CPU two"])
    letters = machine_letters(frame)
    assert letters == {"CPU one": "A", "CPU two": "B"}
    assert machine_of(frame, letters).to_dict() == {("toy", "pop"): "A", ("toy", "sasrec"): "A+B", ("toy", "diffurec"): "B"}
    assert [machine_marker(m) for m in ("A", "B", "A+B")] == ["o", "s", "X"]
    assert "A = CPU one; B = CPU two" in machines_sentence(letters)


def test_one_machine_or_a_failed_trial_elsewhere_needs_no_letters():
    assert machine_letters(_trials(["CPU one"] * 5)) == {} and machines_sentence({}) == ""
    # the only trial on the other machine failed: no row of a table shows it
    assert machine_letters(_trials(["CPU one"] * 4 + ["CPU two"], ["ok"] * 4 + ["failed"])) == {}
    assert machine_letters(pd.DataFrame({"dataset": ["toy"], "model": ["pop"], "status": ["ok"]})) == {}  # records without hardware
