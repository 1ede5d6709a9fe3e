"""Each study declared once: its trials, shared baseline, repeats and stable ids."""

import pytest

from beanlib.errors import BeanlibError
from beanlib import studies
from beanlib.studies import STUDIES, TrialSpec, plan


def test_seed_study_runs_the_baseline_once_for_its_three_factors():
    specs = plan("seed")
    assert len(specs) == 12  # 8 distinct LeNet settings + 4 Inception-v3 variants
    baseline = [s for s in specs if s.setting == "baseline"]
    assert len(baseline) == 1 and baseline[0].factors == ("kernel_size", "kernel_counts", "regularizer")
    c = baseline[0].config
    assert (c.kernel_size, c.kernel_counts, c.regularizer, c.image_size, c.epochs) == (5, (6, 16, 120), "none", 299, 20)
    by_factor = {f: sorted(s.setting for s in specs if f in s.factors) for f in ("kernel_size", "kernel_counts", "regularizer", "inception")}
    assert by_factor["kernel_size"] == ["baseline", "kernel_size=3", "kernel_size=7"]
    assert by_factor["regularizer"] == ["baseline", "regularizer=dropout", "regularizer=l1", "regularizer=l2"]
    assert [s.config.unfreeze_from for s in specs if s.config.model == "inception"] == [None, 249, 229, 133]


def test_lenet_full_is_the_36_cell_factorial():
    specs = plan("lenet-full")
    cells = {(s.config.kernel_size, s.config.kernel_counts, s.config.regularizer) for s in specs}
    assert len(specs) == len(cells) == 36


def test_smoke_is_small_and_offline():
    specs = plan("smoke")
    assert len(specs) == 12 and STUDIES["smoke"].per_class == 4
    assert all(s.config.image_size == 75 and s.config.epochs == 1 for s in specs)
    assert {s.config.weights for s in specs if s.config.model == "inception"} == {"none"}


def test_repeats_change_only_the_seed_and_ids_are_stable_and_unique():
    specs = plan("inception", repeats=3)
    assert len(specs) == 12 and len({s.trial_id for s in specs}) == 12
    assert sorted({s.config.seed for s in specs}) == [0, 1, 2]
    assert [s.trial_id for s in plan("inception", repeats=3)] == [s.trial_id for s in specs]
    assert {s.trial_id for s in plan("inception", overrides={"epochs": 3})}.isdisjoint(s.trial_id for s in specs)


def test_overrides_apply_only_where_the_field_belongs():
    specs = plan("seed", overrides={"image_size": 128, "weights": "none", "epochs": 2})
    assert {s.config.image_size for s in specs} == {128}
    assert {s.config.weights for s in specs} == {None, "none"}  # LeNet trials have no weights field


def test_spec_round_trips_through_a_plain_dict():
    for spec in plan("seed"):
        assert TrialSpec.from_dict(spec.to_dict()) == spec


def test_bad_study_options_are_refused():
    with pytest.raises(BeanlibError, match="unknown study 'sed'"):
        plan("sed")
    with pytest.raises(BeanlibError, match="--repeats must be a positive integer"):
        plan("seed", repeats=0)
    with pytest.raises(BeanlibError, match="too small for Inception-v3"):
        plan("seed", overrides={"image_size": 64})


def test_fine_tune_alternatives_stand_beside_one_shared_default_per_variant():
    specs = plan("inception-finetune")
    defaults = [s for s in specs if s.setting.endswith(", default")]
    assert sorted(s.setting for s in defaults) == ["top-2-blocks, default", "top-6-blocks, default"]
    assert all(s.factors == ("fine_tune_learning_rate", "batchnorm") for s in defaults)  # one trial, in both factors
    assert all(s.config.fine_tune_learning_rate == 1e-5 and s.config.batchnorm == "inference" for s in defaults)
    assert len(specs) == 6 and len({s.trial_id for s in specs}) == 6
    # The `inception` study's top-2 and top-6 trials are the same trials (same config, same id).
    assert {s.trial_id for s in defaults} <= {s.trial_id for s in plan("inception")}


def test_estimated_cost_ranks_trials_as_their_measured_times_do():
    """Measured at 128px, 1 CPU each, two at a time: top-6 261s > LeNet 12-32-240 185s > top-2 128s > baseline 80s
    > LeNet 3-8-60 50s > head-only on cached features 10s (results/seed-128; the `inception` study after fine-tuning
    moved onto the frozen blocks' cached output)."""
    by_setting = {s.setting: studies.estimated_cost(s.config) for s in plan("seed", overrides={"image_size": 128})}
    ranked = ["top-6-blocks", "kernel_counts=12-32-240", "top-2-blocks", "baseline", "kernel_counts=3-8-60", "head-only"]
    assert sorted(ranked, key=by_setting.get, reverse=True) == ranked
