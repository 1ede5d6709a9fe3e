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

Each level of a factorial factor sets one config field (the analysis crosses those fields). Instead of either, a
search samples config fields with one of Ray Tune's searchers, `repeats` seeds per sampled point:

    search:
      algorithm: tpe                    # tpe (Optuna's TPE) or random (Optuna's random sampler), through OptunaSearch
      trials: 36                        # the budget: trials across every sitting, points x repeats
      seed: 0                           # optional (default 0): the sampler's seed
      startup: 4                        # optional (TPE): random points before it models (default: a third, 2 to 10)
      space:
        learning_rate: {loguniform: [1.0e-4, 3.0e-3]}   # also uniform: [low, high], int: [low, high], choice: [...]
        reg_strength: {loguniform: [1.0e-5, 1.0e-1]}

The searcher maximises the validation accuracy of the weights each row reports, averaged over a point's seeds. A bad
file is one `error:` line naming the file, the line, the key and what is wrong, before anything runs.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any

import yaml

from beanlib.config import ALL_FIELDS, TrialConfig
from beanlib.errors import BeanlibError
from beanlib.studies import Dimension, Factor, Search, Study, against, applicable

BUILTIN = Path(__file__).parent / "study_files"  # the built-in studies, one file each, read by this same loader
TOP_KEYS = {"name": True, "description": True, "base": True, "repeats": False, "per_class": False, "factors": False,
            "factorial": False, "search": False}  # key -> required
SEARCH_KEYS = ("algorithm", "trials", "seed", "startup", "space", "metric")
ALGORITHMS = ("tpe", "random")  # Optuna's samplers through Ray Tune's OptunaSearch (beanlib.sweep.search)
KINDS = ("uniform", "loguniform", "int", "choice")
UNSEARCHABLE = ("model", "image_size", "seed", "weights")  # one per search: they change the data, the family or the seeds
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
    if sum(key in top for key in ("factors", "factorial", "search")) != 1:
        f.fail((), "give one of 'factors' (settings per factor), 'factorial' (levels crossed) or 'search' (a space sampled)")
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
    if "search" in top:
        return Study(name, description, base, (), per_class=per_class, repeats=repeats, declared=top,
                     search=_search(f, top["search"], base, repeats))
    if "factors" in top:
        factors = tuple(_factor(f, name_, spec, base) for name_, spec in f.mapping(("factors",), top["factors"], "factor names").items())
    else:
        factors = (_factorial(f, top["factorial"], base),)
    if not factors:
        f.fail(("factors",), "declares no factor: give at least one")
    return Study(name, description, base, factors, per_class=per_class, repeats=repeats, declared=top)


def _search(f: _File, spec: Any, base: dict, repeats: int) -> Search:
    path = ("search",)
    spec = f.mapping(path, spec, "algorithm, trials, space")
    for key in spec:
        if key not in SEARCH_KEYS:
            f.fail(path + (key,), f"unknown key: a search takes {', '.join(SEARCH_KEYS)}")
    for key in ("algorithm", "trials", "space"):
        if key not in spec:
            f.fail(path, f"the key {key!r} is missing")
    if spec["algorithm"] not in ALGORITHMS:
        f.fail(path + ("algorithm",), f"unknown algorithm {spec['algorithm']!r}: use one of {', '.join(ALGORITHMS)}")
    if spec.get("metric", "val_accuracy") != "val_accuracy":
        f.fail(path + ("metric",), "a search maximises val_accuracy (of the weights each row reports), the metric "
                                   "every choice in beanlib is made on: leave it out or say val_accuracy")
    trials, seed, startup = spec["trials"], spec.get("seed", 0), spec.get("startup")
    if not _count(trials) or trials % repeats or trials < 2 * repeats:
        f.fail(path + ("trials",), f"must be a multiple of repeats ({repeats}), at least 2 points' worth, got {trials!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        f.fail(path + ("seed",), f"must be an integer, got {seed!r}")
    if startup is not None and (not _count(startup) or spec["algorithm"] != "tpe"):
        f.fail(path + ("startup",), f"is TPE's count of random points before it models, a positive integer, got {startup!r}")
    space = f.mapping(path + ("space",), spec["space"], "config fields and their ranges")
    if not space:
        f.fail(path + ("space",), "is empty: name at least one config field to search")
    dimensions = tuple(_dimension(f, path + ("space", field), field, value) for field, value in space.items())
    if all(d.kind in ("choice", "int") for d in dimensions):  # the budget's points cannot all differ
        size = math.prod(len(d.values) if d.kind == "choice" else d.values[1] - d.values[0] + 1 for d in dimensions)
        if size < trials // repeats:
            f.fail(path + ("space",), f"holds {size} distinct points, and the budget buys {trials // repeats}: a grid "
                                      "(factors or factorial) runs each once")
    for i in (0, -1):  # each end of the space must make a trial this family can run
        _check_config(f, path + ("space",), base, {d.field: d.values[i] for d in dimensions})
    for d in dimensions:
        for value in d.values if d.kind == "choice" else ():
            _check_config(f, path + ("space", d.field), base, {e.field: e.values[0] for e in dimensions} | {d.field: value})
    return Search(spec["algorithm"], trials, dimensions, seed, startup)


def _dimension(f: _File, path: tuple, field: str, value: Any) -> Dimension:
    """One searched field: {kind: [low, high]} or {choice: [values]}, checked."""
    if field not in ALL_FIELDS:
        f.fail(path, f"unknown config field: known fields are {', '.join(ALL_FIELDS)}")
    if field in UNSEARCHABLE:
        f.fail(path, f"{field} cannot be searched (it changes the family, the data or the seeds): run one search per value")
    value = f.mapping(path, value, f"one of {', '.join(KINDS)} and its bounds")
    if len(value) != 1 or next(iter(value)) not in KINDS:
        f.fail(path, f"give one of {', '.join(KINDS)}, e.g. {{loguniform: [1.0e-4, 1.0e-2]}}, got {value!r}")
    kind, bounds = next(iter(value.items()))
    if not isinstance(bounds, list) or any(isinstance(b, bool) for b in bounds):
        f.fail(path + (kind,), f"must be a list, got {bounds!r}")
    if kind == "choice":
        if len(bounds) < 2 or len(set(map(repr, bounds))) < len(bounds):
            f.fail(path + (kind,), f"needs at least 2 different values, got {bounds!r}")
        if not all(isinstance(b, (int, float, str)) for b in bounds):
            f.fail(path + (kind,), f"takes numbers or names, got {bounds!r}: a list-valued field cannot be a choice")
        return Dimension(field, kind, tuple(bounds))
    numeric = int if kind == "int" else (int, float)
    if len(bounds) != 2 or not all(isinstance(b, numeric) for b in bounds):
        f.fail(path + (kind,), f"must be [low, high]{' (integers)' if kind == 'int' else ''}, got {bounds!r}")
    low, high = bounds
    if low >= high:
        f.fail(path + (kind,), f"low {low!r} is not below high {high!r}")
    if kind == "loguniform" and low <= 0:
        f.fail(path + (kind,), f"a log range must lie above zero, got low {low!r}: use uniform, or a low above 0")
    return Dimension(field, kind, (float(low), float(high)) if kind != "int" else (low, high))


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


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
