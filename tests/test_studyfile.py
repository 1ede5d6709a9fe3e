"""Study files: the built-in studies read from YAML plan exactly the trials they always did, and a bad file is one
line that names the file, the line and the key."""

import hashlib
from pathlib import Path

import pytest

from beanlib.errors import BeanlibError
from beanlib.studies import STUDIES, find_study, plan
from beanlib.studyfile import parse_study

REPO = Path(__file__).resolve().parents[1]

# sha256 of each built-in study's sorted "id setting repeat factors" lines, computed from the studies as Python
# declared them before they became files: (2 repeats at their own size, 1 repeat at 128px with random init).
PINNED = {
    "seed": ("fce3bd833b88d7ce", "9e4d87c196996e13"),
    "lenet-full": ("596a9030cce81555", "1c4281ffa1b57bf6"),
    "inception": ("6671dbded5dbd38c", "79de4453ab1b0981"),
    "inception-head": ("485f40c2f206d093", "acec9755ea8140fe"),
    "inception-finetune": ("9ad6d57e9c94500e", "87341b7a7f5ae1ec"),
    "smoke": ("887e6139c717b217", "e6a019c558e77eb7"),
}


def _digest(specs) -> str:
    text = "\n".join(sorted(f"{s.trial_id} {s.setting} {s.repeat} {s.factor}" for s in specs))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_each_builtin_study_file_plans_the_trials_its_python_declaration_did(name):
    two_repeats = plan(name, repeats=2)
    small = plan(name, overrides={"image_size": 128, "weights": "none"})
    assert (_digest(two_repeats), _digest(small)) == PINNED[name]


GOOD = """\
name: lenet-l2
description: Which L2 strength stops LeNet overfitting?
base: {model: lenet, image_size: 64, epochs: 2}
repeats: 3
factors:
  l2:
    baseline: none
    settings:
      none: {regularizer: none}
      l2=1e-3: {regularizer: l2, reg_strength: 0.001}
      l2=1e-2: {regularizer: l2, reg_strength: 0.01}
"""


def test_a_study_file_declares_its_factors_baseline_and_repeats():
    study = parse_study(GOOD, "lenet-l2.yaml")
    assert (study.name, study.repeats, study.per_class) == ("lenet-l2", 3, None)
    (factor,) = study.factors
    assert factor.planned() == (("l2=1e-3", "none"), ("l2=1e-2", "none"))
    specs = plan(study, repeats=study.repeats)
    assert len(specs) == 9 and {s.config.reg_strength for s in specs} == {0.0, 0.001, 0.01}


def test_a_factorial_crosses_its_levels_and_names_the_fields_it_crosses():
    study = parse_study("""\
name: grid
description: two by two
base: {model: lenet, image_size: 64, epochs: 1}
factorial:
  levels:
    kernel_size: {k3: {kernel_size: 3}, k5: {kernel_size: 5}}
    learning_rate: {fast: {learning_rate: 0.01}, slow: {learning_rate: 0.001}}
""", "grid.yaml")
    (factor,) = study.factors
    assert factor.factorial == ("kernel_size", "learning_rate")
    assert [label for label, _ in factor.settings] == ["k3/fast", "k3/slow", "k5/fast", "k5/slow"]
    assert len(plan(study)) == 4


def _bad(text_or_edit) -> str:
    text = text_or_edit(GOOD) if callable(text_or_edit) else text_or_edit
    with pytest.raises(BeanlibError) as caught:
        parse_study(text, "my.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.replace("repeats: 3", "repeat: 3"), "my.yaml:4: repeat: unknown key: a study file takes name, description"),
    (lambda t: t.replace("    baseline: none", "    basline: none"), "my.yaml:7: factors.l2.basline: unknown key: a factor takes"),
    (lambda t: t.replace("{regularizer: none}", "{regulariser: none}"), "my.yaml:9: factors.l2.settings.none.regulariser: unknown config field"),
    (lambda t: t.replace("reg_strength: 0.01}", "reg_strength: -1}"), "my.yaml:11: factors.l2.settings.l2=1e-2: reg_strength must be a finite number >= 0"),
    (lambda t: t.replace("epochs: 2", "epochs: 0"), "my.yaml:3: base: epochs must be a positive integer"),
    (lambda t: t.replace("repeats: 3", "repeats: 0"), "my.yaml:4: repeats: must be a positive integer"),
    (lambda t: t.split("      l2=1e-3")[0].replace("    baseline: none\n", ""), "my.yaml:7: factors.l2.settings: has 1 setting(s): a factor needs at least 2"),
    (lambda t: t.replace("baseline: none", "baseline: l2=1"), "my.yaml:7: factors.l2.baseline: 'l2=1' is not one of its settings"),
    (lambda t: t.replace("reg_strength: 0.01}", "reg_strength: 0.001}"), "my.yaml:11: factors.l2.settings.l2=1e-2: makes the same trial as 'l2=1e-3'"),
    (lambda t: t.replace("    baseline: none\n", "    contrasts: [[none, l2=5]]\n"), "my.yaml:7: factors.l2.contrasts.0: ['none', 'l2=5'] is not a pair"),
    (lambda t: t.replace("name: lenet-l2", "name: lenet l2/x"), "my.yaml:1: name: must be a folder name"),
    (lambda t: t.replace("factors:", "factorial: {}\nfactors:"), "my.yaml:1: the file: give one of 'factors'"),
    (lambda t: t + "  l2:\n    settings: {a: {}, b: {kernel_size: 3}}\n", "my.yaml:12: factors.l2: appears twice"),
    (lambda t: t.replace("base: {model: lenet,", "base: {model: lenet"), "my.yaml:3: not valid YAML"),
])
def test_a_bad_study_file_is_one_line_naming_the_file_line_and_key(edit, expected):
    message = _bad(edit)
    assert message.startswith(expected), message


def test_a_factorial_whose_levels_set_different_fields_is_a_design_it_cannot_make():
    message = _bad("""\
name: grid
description: x
base: {model: lenet, image_size: 64, epochs: 1}
factorial:
  levels:
    kernel_size: {k3: {kernel_size: 3}, k5: {kernel_size: 5, learning_rate: 0.01}}
    regularizer: {none: {regularizer: none}, l2: {regularizer: l2}}
""")
    assert message.startswith("my.yaml:6: factorial.levels.kernel_size: its levels set ['kernel_size', 'learning_rate']")


def test_a_study_file_is_found_by_path_and_may_not_take_a_builtin_name(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    assert find_study(str(path)).name == "lenet-l2"
    path.write_text(GOOD.replace("name: lenet-l2", "name: seed"))
    with pytest.raises(BeanlibError, match="is named 'seed', as a built-in study is"):
        find_study(str(path))
    with pytest.raises(BeanlibError, match="cannot read study file"):
        find_study(str(tmp_path / "missing.yaml"))
    assert set(PINNED) == set(STUDIES)  # every built-in study is pinned above


def test_the_example_study_files_load():
    examples = sorted((REPO / "studies" / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        study = find_study(str(path))
        assert plan(study) or study.search.points(study.repeats) >= 2
