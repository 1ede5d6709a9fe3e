"""cluster.yaml against Ray's own cluster-config schema. (A sweep over two nodes: tests/test_jobs.py, through
`ray job submit` to two local nodes.)"""

from pathlib import Path

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
