"""TrialConfig: defaults, coercion, and a clear refusal of every invalid value before training."""

import pytest

from beanlib.config import ALL_FIELDS, TrialConfig
from beanlib.families.lenet import DEFAULT_STRENGTH
from beanlib.families.lenet import feature_size as lenet_feature_size
from beanlib.errors import BeanlibError


def test_lenet_defaults_are_the_original_baseline():
    c = TrialConfig.from_dict({"model": "lenet"})
    assert (c.image_size, c.epochs, c.kernel_size, c.kernel_counts, c.regularizer) == (299, 20, 5, (6, 16, 120), "none")
    assert c.weights is None and c.unfreeze_from is None  # the other family's fields stay empty
    assert c.phases == ("train",)


def test_inception_defaults_and_phases():
    head_only = TrialConfig.from_dict({"model": "inception"})
    assert head_only.weights == "imagenet" and head_only.phases == ("head",) and head_only.kernel_size is None
    tuned = TrialConfig.from_dict({"model": "inception", "unfreeze_from": 249})
    assert tuned.phases == ("head", "fine_tune") and tuned.fine_tune_learning_rate == 1e-5


def test_regularizer_strength_defaults_per_regularizer():
    for name, strength in DEFAULT_STRENGTH.items():
        assert TrialConfig.from_dict({"model": "lenet", "regularizer": name}).reg_strength == strength


def test_values_from_flags_and_parquet_are_coerced():
    c = TrialConfig.from_dict({"model": "lenet", "kernel_size": "3", "kernel_counts": "12,32,240", "learning_rate": "0.01"})
    assert c.kernel_size == 3 and c.kernel_counts == (12, 32, 240) and c.learning_rate == 0.01
    assert TrialConfig.from_dict(c.to_dict()) == c  # round trip through a plain dict
    assert TrialConfig.from_dict({"model": "inception", "feature_cache": "false"}).feature_cache is False


@pytest.mark.parametrize(
    "values, message",
    [
        ({"model": "resnet"}, "unknown model 'resnet'"),
        ({"model": "lenet", "kernel_size": 0}, "kernel_size must be a positive integer"),
        ({"model": "lenet", "kernel_size": 2.5}, "kernel_size must be an integer"),
        ({"model": "lenet", "regularizer": "l3"}, "unknown regularizer 'l3'"),
        ({"model": "lenet", "regularizer": "l2", "reg_strength": -0.1}, "reg_strength must be a finite number >= 0"),
        ({"model": "lenet", "regularizer": "dropout", "reg_strength": 1.0}, "dropout rate"),
        ({"model": "lenet", "kernel_counts": [6, 16]}, "kernel_counts must be three positive integers"),
        ({"model": "lenet", "image_size": 20}, "too small for LeNet with kernel 5: use at least 32"),
        ({"model": "lenet", "epochs": 0}, "epochs must be a positive integer"),
        ({"model": "lenet", "learning_rate": 0}, "learning_rate must be a positive number"),
        ({"model": "lenet", "optimizer": "adagrad"}, "unknown optimizer 'adagrad'"),
        ({"model": "lenet", "kernal_size": 3}, "unknown config field 'kernal_size'"),
        ({"model": "lenet", "unfreeze_from": 249}, "does not apply to model 'lenet'"),
        ({"model": "inception", "kernel_size": 3}, "does not apply to model 'inception'"),
        ({"model": "inception", "image_size": 74}, "too small for Inception-v3: use at least 75"),
        ({"model": "inception", "unfreeze_from": 400}, "unfreeze_from 400 is not where a block of Inception-v3 starts: use one of 41, 64"),
        ({"model": "inception", "unfreeze_from": 250}, "use one of 41, 64"),
        ({"model": "inception", "fine_tune_epochs": -1}, "fine_tune_epochs must be an integer >= 0"),
        ({"model": "inception", "feature_cache": "maybe"}, "feature_cache must be true or false"),
    ],
)
def test_invalid_configs_are_refused_with_a_one_line_reason(values, message):
    with pytest.raises(BeanlibError, match=message) as caught:
        TrialConfig.from_dict(values)
    assert "\n" not in str(caught.value)


def test_lenet_feature_size_matches_the_original_table():
    assert lenet_feature_size(299, 5) == 67  # 67x67x120 before Flatten in SEED_STUDY.md
    assert lenet_feature_size(32, 5) == 1 and lenet_feature_size(31, 5) < 1


def test_all_fields_cover_both_families():
    assert {"model", "kernel_size", "unfreeze_from", "seed"} <= set(ALL_FIELDS)


def test_each_transfer_family_takes_the_block_starts_of_its_own_base():
    from beanlib.families.transfer import BASES

    assert TrialConfig.from_dict({"model": "resnet50", "unfreeze_from": BASES["resnet50"].block_starts[-2]}).phases == ("head", "fine_tune")
    with pytest.raises(BeanlibError, match="unfreeze_from 249 is not where a block of ResNet50 starts: use one of 7, 19"):
        TrialConfig.from_dict({"model": "resnet50", "unfreeze_from": 249})  # Inception-v3's top 2
    with pytest.raises(BeanlibError, match="unknown model 'vgg16': use one of lenet, inception, resnet50"):
        TrialConfig.from_dict({"model": "vgg16"})
