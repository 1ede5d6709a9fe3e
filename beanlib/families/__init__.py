"""The model families, each one package behind this registry, found by the name in a config's `model` field.

Nothing else in beanlib names a family: it asks the registry (`family(config.model)`), so a new family is a new
package here and one line below.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from beanlib.errors import BeanlibError
from beanlib.families import lenet, transfer
from beanlib.families.family import Family

FAMILIES: dict[str, Family] = {f.name: f for f in (lenet.FAMILY, *transfer.FAMILIES)}


def family(name: str) -> Family:
    """The family a config's `model` names; BeanlibError for one beanlib does not have."""
    if name not in FAMILIES:
        raise BeanlibError(f"unknown model {name!r}: use one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def keras_code(name: str) -> ModuleType:
    """The family's Keras module (build, train, as_in_last_phase, for_inference), imported on first use."""
    return importlib.import_module(family(name).model)
