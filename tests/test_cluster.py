"""cluster.yaml against Ray's own cluster-config schema, and a sweep spread over a simulated two-node cluster."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]


def test_cluster_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # raises on any schema violation
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}  # trials only on GPU workers
    assert "[gpu]" in " ".join(config["setup_commands"])


def test_cluster_yaml_schema_check_catches_a_typo():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["max_worker"] = config.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


def test_trials_run_on_both_nodes_of_a_two_node_cluster(tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    from beanlib import studies
    from beanlib.studies import LENET_KERNEL_SIZES, Factor, Study
    from beanlib.sweep import SweepOptions, run_sweep

    study = Study("two-nodes", "four small LeNets", {"model": "lenet", "image_size": 64, "epochs": 1, "batch_size": 8},
                  (Factor("kernel_size", tuple((f"kernel_size={k}", {"kernel_size": k}) for k in (*LENET_KERNEL_SIZES, 1))),),
                  per_class=3)
    monkeypatch.setitem(studies.STUDIES, study.name, study)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address)
        summary = run_sweep(SweepOptions(study=study.name, data="synthetic", results=str(tmp_path)), out=lambda line: None)
    finally:
        ray.shutdown()
        cluster.shutdown()
    trials = pd.read_parquet(tmp_path / study.name / "trials")
    assert summary.failed == 0 and len(trials) == 4 and trials["trial_id"].is_unique
    assert trials["node"].nunique() == 2, trials["node"].tolist()
