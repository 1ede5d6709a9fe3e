"""The studies, each declared once as data, and their expansion into a plan of trials.

A study is a base config plus factors; each factor is a list of named
settings (config overrides). A setting reached by several factors (the
one-factor-at-a-time baseline) becomes one trial that counts for each.
`plan()` turns a study into TrialSpecs with stable ids: the same study and
options always give the same ids, which is what makes a sweep resumable.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any, Mapping

from beanlib.config import ALL_FIELDS, FAMILY_FIELDS, TrialConfig
from beanlib.errors import BeanlibError
from beanlib.families import family
from beanlib.weights import CONTENT_PREFIX, IMAGENET, RANDOM


@dataclass(frozen=True)
class Factor:
    """One factor of a study: its name, its settings as (label, config overrides), the questions it asks (planned
    contrasts: (setting, reference) label pairs; none declared: every pair), and for a full factorial the config
    fields it crosses (analysed as main effects and two-way interactions)."""

    name: str
    settings: tuple[tuple[str, dict[str, Any]], ...]
    contrasts: tuple[tuple[str, str], ...] = ()
    factorial: tuple[str, ...] = ()

    def planned(self) -> tuple[tuple[str, str], ...]:
        """The contrasts the verdicts test: the declared ones, else (not a factorial) every pair of settings."""
        if self.contrasts or self.factorial:  # a factorial's questions are its effects (beanlib.stats.factorial)
            return self.contrasts
        return tuple(itertools.combinations([label for label, _ in self.settings], 2))


def against(reference: str, labels) -> tuple[tuple[str, str], ...]:
    """Each setting against `reference` (one-factor-at-a-time: each change against the baseline)."""
    return tuple((label, reference) for label in labels if label != reference)


@dataclass(frozen=True)
class Dimension:
    """One searched config field: how it is sampled (uniform, loguniform, int, choice) and its bounds or values
    (int bounds are inclusive)."""

    field: str
    kind: str
    values: tuple


@dataclass(frozen=True)
class Search:
    """A study's search design: Ray Tune's searcher by name, its budget in trials (points x repeats, across every
    sitting), the space, the sampler's seed, and (TPE) how many points it samples at random before it models."""

    algorithm: str
    trials: int
    space: tuple[Dimension, ...]
    seed: int = 0
    startup: int | None = None

    def points(self, repeats: int) -> int:
        """How many points the budget buys at `repeats` seeds each."""
        return self.trials // repeats

    def distributions(self) -> dict[str, Any]:
        """The space as Optuna's distributions (what OptunaSearch samples, and fANOVA reads)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        kinds = {"uniform": FloatDistribution, "loguniform": lambda lo, hi: FloatDistribution(lo, hi, log=True),
                 "int": IntDistribution, "choice": lambda *values: CategoricalDistribution(values)}
        return {d.field: kinds[d.kind](*d.values) for d in self.space}


SEARCH_FACTOR = "search"  # the factor column of a search's rows; each point is a setting named "point K"


@dataclass(frozen=True)
class Study:
    """A study: what it is for, the config every trial starts from, its factors (or its search), and its data
    subsample."""

    name: str
    description: str
    base: dict[str, Any]
    factors: tuple[Factor, ...]
    per_class: int | None = None  # images per class per split; None: all
    repeats: int = 1  # seeds per setting when the sweep is not told (--repeats)
    declared: dict[str, Any] | None = None  # the study file's values as read (a user's study is recorded in run.json)
    search: Search | None = None  # a search samples its settings; `factors` is then empty


@dataclass(frozen=True)
class TrialSpec:
    """One planned trial: a stable id, where it sits in the study, and its full config."""

    trial_id: str
    study: str
    factors: tuple[str, ...]
    setting: str
    repeat: int
    config: TrialConfig
    per_class: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for Ray Tune's param space)."""
        return {"trial_id": self.trial_id, "study": self.study, "factors": list(self.factors), "setting": self.setting,
                "repeat": self.repeat, "config": self.config.to_dict(), "per_class": self.per_class}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialSpec":
        """The inverse of `to_dict`."""
        return cls(**{**values, "factors": tuple(values["factors"]), "config": TrialConfig.from_dict(values["config"])})

    @property
    def factor(self) -> str:
        """The factors this trial counts for, comma-separated (the baseline counts for several)."""
        return ",".join(self.factors)


def plan(
    study: Study | str,
    *,
    repeats: int = 1,
    overrides: dict[str, Any] | None = None,
) -> list[TrialSpec]:
    """Expand a study into its trials: distinct settings x repeats, validated, with stable ids.

    `overrides` (image_size, epochs, weights, ...) apply to every trial where
    the field belongs to its model family. Repeat r uses seed `base seed + r`.
    """
    if isinstance(study, str):
        study = find_study(study)
    if not isinstance(repeats, int) or repeats < 1:
        raise BeanlibError(f"--repeats must be a positive integer, got {repeats!r}")
    settings: dict[str, tuple[list[str], list[str], TrialConfig]] = {}  # canonical config -> (factors, labels, config)
    for factor in study.factors:
        for label, changes in factor.settings:
            values = applicable({**study.base, **changes, **(overrides or {})})
            config = TrialConfig.from_dict(values)
            key = _setting_key(config)
            if key in settings:
                settings[key][0].append(factor.name)
                settings[key][1].append(label)
            else:
                settings[key] = ([factor.name], [label], config)
    specs = []
    for key, (factors, labels, config) in settings.items():
        label = labels[0] if len(set(labels)) == 1 else "baseline"  # one-factor-at-a-time: each factor names it its own way
        for repeat in range(repeats):
            seeded = TrialConfig.from_dict({**config.to_dict(), "seed": config.seed + repeat})
            specs.append(TrialSpec(trial_id(seeded, study.per_class), study.name, tuple(factors), label, repeat, seeded, study.per_class))
    return specs


def search_spec(study: Study, values: dict[str, Any], repeat: int, *, overrides: dict[str, Any] | None = None,
                per_class: int | None = None, point: int | None = None) -> TrialSpec:
    """One seed of a searched point: the base config with the sampled `values`, seeded as a grid's repeat is (so a
    point the grid also ran has the grid's trial ids). Its setting is "point K" once the sweep has numbered it."""
    config = TrialConfig.from_dict(applicable({**study.base, **values, **(overrides or {})}))
    seeded = TrialConfig.from_dict({**config.to_dict(), "seed": config.seed + repeat})
    label = f"point {point}" if point is not None else SEARCH_FACTOR
    return TrialSpec(trial_id(seeded, per_class), study.name, (SEARCH_FACTOR,), label, repeat, seeded, per_class)


def plain(value: Any) -> Any:
    """A sampled value as JSON and Optuna keep it (a numpy scalar becomes Python's)."""
    return value.item() if hasattr(value, "item") else value


def search_probes(study: Study, overrides: dict[str, Any] | None = None, per_class: int | None = None) -> list[TrialSpec]:
    """Trials at the corners of a search's space (every dimension at its low end, then at its high end, and each
    choice): what the sweep checks options, weights, data and space against before the searcher samples."""
    ends = [{d.field: d.values[i] for d in study.search.space} for i in (0, -1)]
    ends += [{**ends[0], d.field: v} for d in study.search.space if d.kind == "choice" for v in d.values]
    return [search_spec(study, values, 0, overrides=overrides, per_class=per_class) for values in ends]


def find_study(name: str) -> Study:
    """A built-in study by name, or the study a YAML file declares (a path ending in .yaml or .yml)."""
    if name in STUDIES:
        return STUDIES[name]
    if name.endswith((".yaml", ".yml")):
        from beanlib.studyfile import load_study

        study = load_study(name)
        if study.name in STUDIES:
            raise BeanlibError(f"study file {name} is named {study.name!r}, as a built-in study is: give it a name of its own")
        return study
    raise BeanlibError(f"unknown study {name!r}: use one of {', '.join(STUDIES)}, or the path of a .yaml study file")


def study_of_run(manifest: dict[str, Any]) -> Study | None:
    """The study a run (its run.json) was planned from: a built-in one by name, a user's from the declaration the
    run recorded; None for a study beanlib cannot know."""
    if manifest.get("study") in STUDIES:
        return STUDIES[manifest["study"]]
    if isinstance(manifest.get("study_file"), dict):
        import yaml

        from beanlib.studyfile import parse_study

        return parse_study(yaml.safe_dump(manifest["study_file"], sort_keys=False), "run.json study_file")
    return None


def trial_id(config: TrialConfig, study_per_class: int | None) -> str:
    """A trial's stable id: a hash of what it trains (its config, a weights file by content) and its study's
    subsample. A pure function of content, so a run's rows can be re-keyed from their own columns."""
    digest = hashlib.sha256(json.dumps([_setting_key(config), config.seed, study_per_class]).encode()).hexdigest()
    return f"{config.model}-{digest[:10]}"


def trial_id_of_row(row: Mapping[str, Any]) -> str | None:
    """The id a trials row's own columns give it today (None where its study is unknown or its config no longer
    valid): how `RunStore.upgrade` re-keys a run whose ids an older beanlib derived from a weights file's path."""
    study = STUDIES.get(row.get("study"))
    if study is None:
        return None
    values = {k: row.get(k) for k in ALL_FIELDS}
    if row.get("weights_sha256") and values.get("weights") not in (None, IMAGENET, RANDOM):
        values["weights"] = CONTENT_PREFIX + row["weights_sha256"]
    try:
        return trial_id(TrialConfig.from_dict(values), study.per_class)
    except BeanlibError:
        return None


def _setting_key(config: TrialConfig) -> str:
    """A setting's canonical form: its identity less the seed (repeats of one setting share it)."""
    return json.dumps({k: v for k, v in config.identity().items() if k != "seed"}, sort_keys=True)


# What TensorBoard's HParams view shows of each trial: its place in the study and the settings the studies vary.
HPARAMS = ("model", "image_size", "epochs", "learning_rate", "seed", "kernel_size",
           "kernel_counts", "regularizer", "unfreeze_from", "fine_tune_epochs", "batchnorm")


def hparams(spec: dict) -> dict[str, Any]:
    """A trial's entry in Tune's grid: its id and HPARAMS values (TensorBoard's HParams view shows them as
    trial/NAME), strings and numbers only, as TensorBoard takes them ("none" for an unset value)."""
    placed = TrialSpec.from_dict(spec)
    values = {"trial_id": placed.trial_id, "factor": placed.factor, "setting": placed.setting, "repeat": placed.repeat,
              **{name: spec["config"].get(name) for name in HPARAMS}}
    return {k: "-".join(map(str, v)) if isinstance(v, (list, tuple)) else "none" if v is None else v for k, v in values.items()}


def trial_name(spec: dict) -> str:
    """Tune's name for a trial (its tables, the dashboard): the beanlib id, setting and repeat."""
    return f"{spec['trial_id']} {spec['setting']} r{spec['repeat']}"


def estimated_cost(config: TrialConfig) -> float:
    """A trial's compute in multiply-adds, roughly (its family's estimate): what the sweep sorts by to start the
    longest trials first. Longest-first keeps the slow fine-tunes from arriving last and running on one core while
    the others idle (the `seed` study's measured trial times at 128px, packed on 2 CPUs: 710s instead of 770s in
    plan order)."""
    return family(config.model).cost(config)


def estimated_params(config: TrialConfig, num_classes: int = 3) -> int:
    """A trial's model parameters, all of them, without building it (its family's count): what its saved model and
    checkpoints weigh (tests check it against Keras's count)."""
    return family(config.model).params(config, num_classes)


def applicable(values: dict[str, Any]) -> dict[str, Any]:
    """Drop fields of the other model family (a study-wide `weights` on a LeNet trial); keep unknown ones to be refused."""
    mine = set(FAMILY_FIELDS.get(values.get("model"), ()))
    others = {f for fields in FAMILY_FIELDS.values() for f in fields} - mine
    return {k: v for k, v in values.items() if k not in others}


def _builtin() -> dict[str, Study]:
    from beanlib.studyfile import builtin_studies  # it builds Study and Factor, defined above

    return builtin_studies()


# The built-in studies, each declared once in its own file (beanlib/study_files/NAME.yaml), read as a user's are.
STUDIES: dict[str, Study] = _builtin()
