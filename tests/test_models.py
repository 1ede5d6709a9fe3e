"""Both model families against SEED_STUDY.md: shapes, every parameter count, trainable sets per unfreeze variant."""

import keras
import numpy as np
import pytest

from beanlib.config import TrialConfig
from beanlib.families.transfer.model import set_unfrozen
from beanlib.models import build, count_params

# SEED_STUDY.md's 3x3 table: parameters at 299x299 by kernel size and kernel counts.
LENET_PARAMS = {
    3: {(3, 8, 60): 15_127_891, (6, 16, 120): 30_264_651, (12, 32, 240): 60_565_387},
    5: {(3, 8, 60): 13_480_099, (6, 16, 120): 26_985_195, (12, 32, 240): 54_070_987},
    7: {(3, 8, 60): 12_313_411, (6, 16, 120): 24_676_011, (12, 32, 240): 49_549_387},
}


def lenet(**values):
    return build(TrialConfig.from_dict({"model": "lenet", **values})).model


def test_lenet_baseline_layers_match_the_original_table():
    model = lenet()
    assert model.count_params() == 26_985_195
    shapes = {layer.name: (tuple(layer.output.shape[1:]), layer.count_params()) for layer in model.layers}
    assert shapes["conv1"] == ((295, 295, 6), 456)
    assert shapes["pool1"][0] == (147, 147, 6)
    assert shapes["conv2"] == ((143, 143, 16), 2_416)
    assert shapes["pool2"][0] == (71, 71, 16)
    assert shapes["conv3"] == ((67, 67, 120), 48_120)
    assert shapes["dense"] == ((50,), 26_934_050)
    assert shapes["logits"] == ((3,), 153)


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
def test_lenet_parameter_table_holds(kernel_size):
    for counts, expected in LENET_PARAMS[kernel_size].items():
        assert lenet(kernel_size=kernel_size, kernel_counts=counts).count_params() == expected


def test_lenet_regularizers_add_penalties_or_dropout_but_no_parameters():
    for name, kind in [("l1", "L1"), ("l2", "L2")]:
        model = lenet(image_size=64, regularizer=name)
        assert type(model.get_layer("conv1").kernel_regularizer).__name__ == kind
        assert len(model.losses) == 3  # one penalty per conv kernel, none on the dense layers
    dropout = lenet(image_size=64, regularizer="dropout")
    assert [layer.rate for layer in dropout.layers if isinstance(layer, keras.layers.Dropout)] == [0.2, 0.2, 0.2]
    assert dropout.count_params() == lenet(image_size=64).count_params()
    x = np.full((2, 64, 64, 3), 128, np.uint8)
    assert not np.allclose(dropout(x, training=True), dropout(x, training=False))


@pytest.fixture(scope="session")
def inception_299():
    return build(TrialConfig.from_dict({"model": "inception", "weights": "none"}))


def test_inception_total_and_head_only_trainable(inception_299):
    assert inception_299.model.count_params() == 23_904_035
    assert count_params(inception_299.model.trainable_weights) == 2_101_251
    assert count_params(inception_299.head.trainable_weights) == 2_101_251


def test_inception_trainable_counts_per_unfreeze_variant_in_any_order(inception_299):
    expected = {249: 13_216_131, 229: 14_913_155, 133: 20_431_747, None: 2_101_251}
    # Toggle back and forth on one built model: a stale trainable set would show here.
    for unfreeze_from in [249, 133, 229, None, 133, 249]:
        set_unfrozen(inception_299, unfreeze_from)
        assert count_params(inception_299.model.trainable_weights) == expected[unfreeze_from], unfreeze_from
    set_unfrozen(inception_299, None)


def test_inception_accepts_75px_and_outputs_logits():
    built = build(TrialConfig.from_dict({"model": "inception", "weights": "none", "image_size": 75}))
    x = np.random.default_rng(0).integers(0, 255, (2, 75, 75, 3)).astype(np.uint8)
    assert built.model(x).shape == (2, 3)
    assert built.features(x).shape == (2, 2048)
    # the full model is exactly the head applied to the pooled features
    np.testing.assert_allclose(built.model(x), built.head(built.features(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_inception_weights_from_a_local_file(tmp_path):
    source = build(TrialConfig.from_dict({"model": "inception", "weights": "none", "image_size": 75, "seed": 3}))
    path = tmp_path / "base.weights.h5"
    source.base.save_weights(path)
    loaded = build(TrialConfig.from_dict({"model": "inception", "weights": str(path), "image_size": 75}))
    for a, b in zip(source.base.weights[:5], loaded.base.weights[:5]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.slow
def test_both_families_take_their_output_size_from_the_data():
    from beanlib.models import parameter_counts

    small = TrialConfig.from_dict({"model": "lenet", "image_size": 64})
    assert build(small, 5).model.output_shape == (None, 5)
    three, five = parameter_counts(small), parameter_counts(small, 5)
    assert five[0] - three[0] == five[1] - three[1] == 2 * 51  # Dense(50 -> n): 51 parameters per class
    head = TrialConfig.from_dict({"model": "inception", "image_size": 75, "weights": "none"})
    assert parameter_counts(head, 7)[0] - parameter_counts(head)[0] == 4 * 1025  # Dense(1024 -> n)


@pytest.mark.parametrize("values, classes", [
    ({"model": "lenet", "image_size": 75}, 3),
    ({"model": "lenet", "image_size": 128, "kernel_size": 7, "kernel_counts": [12, 32, 240], "regularizer": "dropout"}, 5),
    ({"model": "inception", "image_size": 75, "weights": "none", "unfreeze_from": 249}, 4),
])
def test_the_size_estimate_counts_the_parameters_keras_builds(values, classes):
    """The sweep sizes its disk needs from estimated_params without building a model: it must be Keras's count."""
    from beanlib.models import parameter_counts
    from beanlib.studies import estimated_params

    config = TrialConfig.from_dict(values)
    assert estimated_params(config, classes) == parameter_counts(config, classes)[1]


OTHER_BASES = ["resnet50", "efficientnet_b0", "mobilenet_v3_large", "convnext_tiny"]
# The first operation of a block, as Keras names it in each base, the block's name first (ConvNeXt: a stage's first
# block opens with its downsampling layer).
BLOCK_OPENERS = {
    "inception": r"^(conv2d|average_pooling2d|max_pooling2d)",  # after a mixedN concat
    "resnet50": r"^(conv\d_block\d+)_1_conv$",
    "efficientnet_b0": r"^(block\d[a-z])_(expand_conv|dwconv)$",
    "mobilenet_v3_large": r"^(expanded_conv(?:_\d+)?)_(expand|depthwise)$",
    "convnext_tiny": r"^convnext_tiny_(stage_0_block_0_depthwise_conv|stage_\d_block_[1-9]\d*_depthwise_conv|downsampling_block_\d)$",
}


def _clean_cuts(network) -> set[int]:
    """Indices s of the network's operations where it can be cut: nothing from s on reads an operation before s - 1."""
    operations = network.operations
    index = {id(op): i for i, op in enumerate(operations)}
    earliest = [min([index[id(p.operation)] for node in op._inbound_nodes for p in node.parent_nodes if id(p.operation) in index]
                    or [i]) for i, op in enumerate(operations)]
    cuts, reads_from = set(), len(operations)
    for s in range(len(operations) - 1, 0, -1):
        reads_from = min(reads_from, earliest[s])
        if reads_from >= s - 1:
            cuts.add(s)
    return cuts


@pytest.mark.slow
@pytest.mark.parametrize("model", ["inception", *OTHER_BASES])
def test_each_bases_table_matches_the_network_keras_builds(model):
    """Block starts are clean cuts that open a block, one per block; operations, parameters and channels as Keras
    counts them; and the whole model's parameters are the dry run's estimate."""
    import re

    from beanlib.families.transfer import BASES
    from beanlib.models import parameter_counts
    from beanlib.studies import estimated_params

    spec = BASES[model]
    config = TrialConfig.from_dict({"model": model, "image_size": 75, "weights": "none"})
    built = build(config)
    operations = built.base.operations
    assert (len(operations), built.base.count_params(), built.base.output_shape[-1]) == (spec.operations, spec.params, spec.channels)
    blocks: dict[str, int] = {}  # a block's name -> its first clean cut that opens it
    for s in sorted(_clean_cuts(built.base)):
        if found := re.search(BLOCK_OPENERS[model], operations[s].name):
            blocks.setdefault(operations[s - 1].name if model == "inception" else found.group(1), s)
    if model == "inception":  # its table is the cuts right after each mixedN block but the last
        blocks = {name: s for name, s in blocks.items() if name.startswith("mixed")}
    assert tuple(blocks.values()) == spec.block_starts
    assert parameter_counts(config)[1] == estimated_params(config) == built.model.count_params()


@pytest.mark.parametrize("model, application", [("inception", "inception_v3"), ("resnet50", "resnet50")])
def test_a_bases_preprocessing_layer_is_what_keras_preprocess_input_does(model, application):
    """Inception's and ResNet50's preprocessing as one built-in layer (no Lambda: safe-mode loading) equals
    keras.applications' own preprocess_input; the other bases preprocess inside the network Keras builds."""
    from beanlib.families.transfer import BASES
    from beanlib.families.transfer.model import preprocessing

    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3)).astype("float32")
    expected = getattr(keras.applications, application).preprocess_input(pixels.copy())
    layer = preprocessing(BASES[model])
    np.testing.assert_allclose(np.asarray(layer(pixels)), expected, rtol=1e-5, atol=1e-3)
    assert {BASES[m].preprocessing for m in OTHER_BASES if m != "resnet50"} == {"included"}


@pytest.mark.slow
@pytest.mark.parametrize("model", OTHER_BASES)
def test_each_base_fine_tunes_its_top_blocks_with_the_same_protocol(model, tmp_path):
    """Head phase on cached features, then the top 2 blocks open (BatchNorm on moving statistics), for every base:
    the trial runs, the fine-tune trains only the open blocks and the head, and its saved model loads in safe mode."""
    from beanlib.data import load_beans
    from beanlib.families.transfer import BASES
    from beanlib.train import run_trial

    data = load_beans("synthetic", 75, per_class=3)
    top2 = BASES[model].block_starts[-2]
    config = TrialConfig.from_dict({"model": model, "image_size": 75, "weights": "none", "epochs": 1, "fine_tune_epochs": 1,
                                    "unfreeze_from": top2, "batch_size": 4})
    saved = tmp_path / "model.keras"
    result = run_trial(config, data, save_model=str(saved))
    assert result.status == "ok" and [r["phase"] for r in result.history] == ["head", "fine_tune"]
    head_only = TrialConfig.from_dict({**config.to_dict(), "unfreeze_from": None})
    from beanlib.models import parameter_counts

    assert parameter_counts(head_only)[0] < result.trainable_params < result.total_params
    loaded = keras.saving.load_model(saved, safe_mode=True)
    assert loaded.output_shape == (None, 3)
