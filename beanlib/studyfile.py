"""Studies declared in YAML files: the built-in ones (beanlib/study_files/*.yaml) and a user's own (`--study PATH`).

    name: lenet-l2                      # the run's folder under --results, unless --name says otherwise
    description: Which L2 strength, if any, stops LeNet overfitting?
    base: {model: lenet, image_size: 128, epochs: 20}   # the config every trial starts from
    repeats: 3                          # optional (default 1): seeds per setting; --repeats overrides
    per_class: null                     # optional: images per class per split (null: all)
    factors:                            # each factor a list of named settings (config overrides)
      l2:
        baseline: none                  # one-factor-at-a-time: every other setting against this one
        settings:
          none: {regularizer: none}
          l2=1e-3: {regularizer: l2, reg_strength: 0.001}

A factor without `baseline` may name its questions, `contrasts: [[a, b], ...]` (each a against b); with
neither, every pair is compared. A factor of one setting says `contrasts: []` (it asks no question). Instead of `factors`, a full factorial crosses every level of each factor:

    factorial:
      name: grid                        # the factor its trials count for
      levels:
        kernel_size: {k3: {kernel_size: 3}, k5: {kernel_size: 5}}
        regularizer: {none: {regularizer: none}, l2: {regularizer: l2}}

Each level of a factorial factor sets one config field (the analysis crosses those fields). A bad file is one
`error:` line naming the file, the line, the key and what is wrong, before anything runs.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import yaml

from beanlib.config import ALL_FIELDS, TrialConfig
from beanlib.errors import BeanlibError
from beanlib.studies import Factor, Study, against, applicable

BUILTIN = Path(__file__).parent / "study_files"  # the built-in studies, one file each, read by this same loader
TOP_KEYS = {"name": True, "description": True, "base": True, "repeats": False, "per_class": False, "factors": False,
            "factorial": False}  # key -> required
FACTOR_KEYS = ("settings", "baseline", "contrasts")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a study name is a folder name


class _File:
    """A parsed study file: its values, and the line of each key (by its path of keys), for one-line errors."""

    def __init__(self, text: str, source: str):
        self.source, self.lines = source, {}
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f":{mark.line + 1}" if mark else ""
            raise BeanlibError(f"{source}{where}: not valid YAML ({getattr(error, 'problem', None) or error}): "
                               "fix the file's syntax") from None
        self.values = self._build(node, ()) if node is not None else None

    def _build(self, node: yaml.Node, path: tuple) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._build(key_node, path)
                if key in out:
                    self.fail(path + (key,), "appears twice: keep one", line=key_node.start_mark.line + 1)
                self.lines[path + (key,)] = key_node.start_mark.line + 1
                out[key] = self._build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._build(item, path + (i,)) for i, item in enumerate(node.value)]
        return yaml.constructor.SafeConstructor().construct_object(node)

    def fail(self, path: tuple, message: str, line: int | None = None) -> None:
        """Raise the one-line error for the key at `path`."""
        line = line or self.lines.get(path) or self.lines.get(path[:-1]) or 1
        key = ".".join(map(str, path)) or "the file"
        raise BeanlibError(f"{self.source}:{line}: {key}: {message}")

    def mapping(self, path: tuple, value: Any, what: str) -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping ({what}), got {type(value).__name__}")
        return value


def load_study(path: str | Path) -> Study:
    """The study a YAML file declares; BeanlibError (file:line: key: problem) for anything wrong in it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise BeanlibError(f"cannot read study file {path} ({error.strerror}): give the path of a .yaml study file") from None
    return parse_study(text, str(path))


def parse_study(text: str, source: str) -> Study:
    """The study in YAML `text` (from `source`, named in errors)."""
    f = _File(text, source)
    top = f.mapping((), f.values, "name, description, base, factors or factorial")
    for key in top:
        if key not in TOP_KEYS:
            f.fail((key,), f"unknown key: a study file takes {', '.join(TOP_KEYS)}")
    for key, required in TOP_KEYS.items():
        if required and key not in top:
            f.fail((), f"the key {key!r} is missing")
    if ("factors" in top) == ("factorial" in top):
        f.fail((), "give either 'factors' (settings per factor) or 'factorial' (levels crossed), one of them")
    name, description = top["name"], top["description"]
    if not isinstance(name, str) or not NAME.match(name):
        f.fail(("name",), f"must be a folder name (letters, digits, '_', '.', '-'), got {name!r}")
    if not isinstance(description, str):
        f.fail(("description",), "must be text")
    base = f.mapping(("base",), top["base"], "config fields and values")
    _check_fields(f, ("base",), base)
    _check_config(f, ("base",), base, {})
    repeats, per_class = top.get("repeats", 1), top.get("per_class")
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        f.fail(("repeats",), f"must be a positive integer, got {repeats!r}")
    if per_class is not None and (not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1):
        f.fail(("per_class",), f"must be a positive integer or null, got {per_class!r}")
    if "factors" in top:
        factors = tuple(_factor(f, name_, spec, base) for name_, spec in f.mapping(("factors",), top["factors"], "factor names").items())
    else:
        factors = (_factorial(f, top["factorial"], base),)
    if not factors:
        f.fail(("factors",), "declares no factor: give at least one")
    return Study(name, description, base, factors, per_class=per_class, repeats=repeats, declared=top)


def _factor(f: _File, name: str, spec: Any, base: dict) -> Factor:
    path = ("factors", name)
    spec = f.mapping(path, spec, "settings, and baseline or contrasts")
    for key in spec:
        if key not in FACTOR_KEYS:
            f.fail(path + (key,), f"unknown key: a factor takes {', '.join(FACTOR_KEYS)}")
    if "settings" not in spec:
        f.fail(path, "has no 'settings'")
    # One setting compares nothing, so it is refused as a slip, unless the factor says it asks no question.
    alone = spec.get("contrasts", None) == []
    settings = _settings(f, path + ("settings",), spec["settings"], base, least=1 if alone else 2)
    labels = [label for label, _ in settings]
    if "baseline" in spec and "contrasts" in spec:
        f.fail(path + ("contrasts",), "give 'baseline' (each setting against it) or 'contrasts', not both")
    if "baseline" in spec:
        if spec["baseline"] not in labels:
            f.fail(path + ("baseline",), f"{spec['baseline']!r} is not one of its settings: use one of {', '.join(labels)}")
        return Factor(name, settings, against(spec["baseline"], labels))
    contrasts = spec.get("contrasts", [])
    if not isinstance(contrasts, list):
        f.fail(path + ("contrasts",), "must be a list of [setting, reference] pairs")
    for i, pair in enumerate(contrasts):
        if not (isinstance(pair, list) and len(pair) == 2 and all(p in labels for p in pair) and pair[0] != pair[1]):
            f.fail(path + ("contrasts", i), f"{pair!r} is not a pair of two of its settings ({', '.join(labels)})")
    return Factor(name, settings, tuple(tuple(pair) for pair in contrasts))


def _settings(f: _File, path: tuple, values: Any, base: dict, least: int = 2) -> tuple[tuple[str, dict], ...]:
    """A factor's named settings, each checked as a trial config on top of `base`; two that make one trial are refused."""
    values = f.mapping(path, values, "setting names and their config overrides")
    if len(values) < least:
        f.fail(path, f"has {len(values)} setting(s): a factor needs at least 2 to compare (one run only for its own "
                     "numbers says `contrasts: []`)")
    seen: dict[str, str] = {}
    for label, changes in values.items():
        changes = {} if changes is None else f.mapping(path + (label,), changes, "config fields and values")
        _check_fields(f, path + (label,), changes)
        config = _check_config(f, path + (label,), base, changes)
        key = repr(sorted(config.identity().items()))
        if key in seen:
            f.fail(path + (label,), f"makes the same trial as {seen[key]!r}: two settings of a factor must differ")
        seen[key] = str(label)
    return tuple((str(label), dict(changes or {})) for label, changes in values.items())


def _factorial(f: _File, spec: Any, base: dict) -> Factor:
    path = ("factorial",)
    spec = f.mapping(path, spec, "name and levels")
    for key in spec:
        if key not in ("name", "levels"):
            f.fail(path + (key,), "unknown key: a factorial takes name, levels")
    levels = f.mapping(path + ("levels",), spec.get("levels"), "factor names and their levels")
    if len(levels) < 2:
        f.fail(path + ("levels",), "crosses fewer than 2 factors: use 'factors' for one")
    fields = []
    for factor, named in levels.items():
        named = f.mapping(path + ("levels", factor), named, "level names and their config overrides")
        if len(named) < 2:
            f.fail(path + ("levels", factor), f"has {len(named)} level(s): a factor needs at least 2")
        varied = {k for changes in named.values() for k in (changes or {})}
        if len(varied) != 1:
            f.fail(path + ("levels", factor), f"its levels set {sorted(varied) or 'nothing'}: each level of a factorial "
                   "factor sets the same one config field, which the analysis crosses")
        fields.append(varied.pop())
    if len(set(fields)) < len(fields):
        f.fail(path + ("levels",), f"two factors set the same field ({', '.join(fields)}): the design cannot cross them")
    grid = {"/".join(labels): {k: v for changes in combo for k, v in (changes or {}).items()}
            for labels, combo in ((tuple(l for l, _ in c), tuple(ch for _, ch in c))
                                  for c in itertools.product(*(named.items() for named in levels.values())))}
    settings = _settings(f, path + ("levels",), grid, base)
    return Factor(str(spec.get("name", "grid")), settings, factorial=tuple(fields))


def _check_fields(f: _File, path: tuple, values: dict) -> None:
    for key in values:
        if key not in ALL_FIELDS:
            f.fail(path + (key,), f"unknown config field: known fields are {', '.join(ALL_FIELDS)}")


def _check_config(f: _File, path: tuple, base: dict, changes: dict) -> TrialConfig:
    try:
        return TrialConfig.from_dict(applicable({**base, **changes}))
    except BeanlibError as error:
        f.fail(path, str(error))


def builtin_studies() -> dict[str, Study]:
    """The studies shipped with beanlib, by name, in the order their files sort."""
    studies = [load_study(path) for path in sorted(BUILTIN.glob("*.yaml"))]
    return {s.name: s for s in studies}
