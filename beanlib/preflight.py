"""What the sweep checks, records and shows before it runs anything: the options, stale trials, the memory the data
needs, the run's manifest, the environment its Ray workers get, and the dry run's table. No Ray import here."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Callable

from beanlib import backend, semantics
from beanlib.config import CLASS_NAMES
from beanlib.data import CARVE_FRACTIONS, CARVE_SEED, decoded_bytes
from beanlib.errors import BeanlibError
from beanlib.families import FAMILIES
from beanlib.results import FINISHED
from beanlib.studies import STUDIES, TrialSpec
from beanlib.weights import content_identity

if TYPE_CHECKING:
    from beanlib.results import RunStore
    from beanlib.studies import Study
    from beanlib.sweep import SweepOptions

JOB_CONFIG = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for the driver of a `ray job submit` job: the job's config

def check_options(opts: "SweepOptions", specs: list[TrialSpec]) -> None:
    """Refuse options that cannot work together, in one line each: a setting the study does not have; a relative
    results folder inside `ray job submit`'s temporary copy of the working directory; a pruning scheduler across two
    model families."""
    if JOB_CONFIG in os.environ and "://" not in opts.results and not os.path.isabs(os.path.expanduser(opts.results)):
        raise BeanlibError(f"--results {opts.results} is relative, and under `ray job submit` that is inside Ray's temporary "
                           "copy of the working directory, which Ray deletes: pass an absolute path or a URI (s3://, gs://)")
    settings = list(dict.fromkeys(s.setting for s in specs))
    if unknown := [name for name in opts.only if name not in settings]:
        raise BeanlibError(f"--only {' '.join(unknown)}: study {opts.study} has no such setting: use one of {', '.join(settings)}")
    if opts.scheduler != "fifo" and len(models := sorted({s.config.model for s in specs}, key=list(FAMILIES).index)) > 1:
        raise BeanlibError(f"--scheduler {opts.scheduler} compares trials by validation accuracy, and study {opts.study} mixes "
                           f"{' and '.join(FAMILIES[m].title for m in models)}, whose curves are not comparable: run one family per sweep "
                           "(e.g. --study lenet-full or --study inception), or use --scheduler fifo")


def check_search(opts: "SweepOptions", study: "Study") -> None:
    """Refuse options a search cannot take: --only (its settings are sampled), and an override of a searched field."""
    if opts.only:
        raise BeanlibError(f"--only {' '.join(opts.only)}: study {study.name} is a search, whose points are sampled as it "
                           "goes: run it whole")
    if clash := sorted(set(opts.overrides()) & {d.field for d in study.search.space}):
        raise BeanlibError(f"--{clash[0].replace('_', '-')} sets {clash[0]}, which study {study.name} searches: leave it "
                           "out, or fix it in the study file's base instead of its space")


def flag_stale(opts: "SweepOptions", store: "RunStore", specs: list[TrialSpec], done: dict[str, str],
                out: Callable[[str], None]) -> dict[str, str]:
    """Say which planned, finished trials older code computed differently (beanlib.semantics); with
    --retrain-stale, count them as not done, so that they train again. Returns the statuses the sweep goes by."""
    planned = {s.trial_id: s.setting for s in specs}
    stale = {trial_id: v for trial_id, v in store.stale().items() if trial_id in planned}
    if not stale:
        return done
    versions = ", ".join(f"{sum(v == version for v in stale.values())} {semantics.describe(version)}"
                         for version in sorted(set(stale.values()), key=lambda v: -1 if v is None else v))
    settings = ", ".join(sorted({planned[t] for t in stale}))
    if opts.retrain_stale:
        out(f"{len(stale)} finished trial(s) trained by code of other semantics ({versions}) train again with "
            f"{semantics.describe(semantics.SEMANTICS)}; their rows are set aside in {store.uri}/superseded as each finishes")
        return {t: s for t, s in done.items() if t not in stale}
    out(f"warning: {len(stale)} finished trial(s) were trained by code of other semantics than this beanlib's "
        f"{semantics.describe(semantics.SEMANTICS)}: {versions}; settings {settings}. They are kept and the report flags "
        "them; --retrain-stale trains them again")
    return done


# The decoded images must fit in this share of the driver's available memory (ours: the rest is for decoding
# buffers and, on one machine, the trials), and once in Ray's object store, from which every trial maps them.
MEMORY_SHARE = 0.8


def check_memory(source: str, sizes: list[int], per_class: int | None) -> None:
    """Refuse, before decoding, data that would not fit in this machine's memory, with the figures."""
    import psutil

    need = sum(decoded_bytes(source, size, per_class) or 0 for size in sizes)
    available = psutil.virtual_memory().available
    if need > MEMORY_SHARE * available:
        raise BeanlibError(f"the decoded images need {need / 2**30:.1f} GiB (every image, uint8, at {', '.join(map(str, sizes))}px) "
                           f"and this machine has {available / 2**30:.1f} GiB available: use --per-class, a smaller "
                           "--image-size, or a machine with more memory")


def manifest(opts: "SweepOptions", chosen_backend: str, per_class: int | None, data: dict, study: "Study") -> dict[str, Any]:
    """What the run is, for run.json: study, options (a weights file by content), repeats, the data's source
    (provenance) and, where they differ from beans' defaults, scheduler, backend, classes and a split beanlib made;
    for a user's study file, what it declared (a changed declaration is a different study, as a changed option is).
    Keys older runs do not have are recorded only when set away from their defaults, so those runs still match."""
    source = opts.data if opts.data in ("tfds", "synthetic") or opts.data.startswith("tfds:") or "://" in opts.data \
        else os.path.abspath(opts.data)
    overrides = opts.overrides()
    if overrides.get("weights"):
        overrides["weights"] = content_identity(overrides["weights"])
    first = next(iter(data.values()))
    extra = {"scheduler": opts.scheduler} if opts.scheduler != "fifo" else {}
    extra |= {"backend": chosen_backend} if chosen_backend != backend.DEFAULT else {}
    extra |= {"classes": list(first.class_names)} if first.class_names != CLASS_NAMES else {}
    extra |= {"split": f"made by beanlib: {CARVE_FRACTIONS} per class, seed {CARVE_SEED}; see split.parquet"} if first.carved else {}
    extra |= {"study_file": study.declared} if study.name not in STUDIES else {}
    return {"study": opts.study, "data": source, "repeats": opts.repeats, "per_class": per_class, "overrides": overrides, **extra}


def runtime_env() -> dict[str, Any]:
    """The driver's env vars that every worker needs (C++ log level, Keras backend), less any that the job's own
    runtime env sets (`ray job submit --runtime-env-json`): there the user's value wins, and Ray refuses to merge
    one key from both."""
    wanted = {k: os.environ[k] for k in ("TF_CPP_MIN_LOG_LEVEL", "BEANLIB_SET_TF_LOG_LEVEL", "KERAS_BACKEND") if k in os.environ}
    job = json.loads(os.environ.get(JOB_CONFIG) or "{}")
    theirs = (job.get("runtime_env") or {}).get("env_vars") or {}
    return {"env_vars": {k: v for k, v in wanted.items() if k not in theirs}}


def print_plan(specs: list[TrialSpec], done: dict[str, str], out: Callable[[str], None], num_classes: int) -> None:
    """The dry-run table: one line per trial with its factor, setting, config and parameter counts (for the data's
    `num_classes` classes)."""
    from beanlib.models import parameter_counts

    backend.needed()  # counting builds the models: the driver's set-up (no GPUs) comes first
    # Columns as wide as their longest entry: ids carry the model's name, factors and settings the user's.
    i, f, s = (max([len(name), *(len(getattr(spec, name)) for spec in specs)]) for name in ("trial_id", "factor", "setting"))
    out(f"{'trial_id':{i}s} {'factor':{f}s} {'setting':{s}s} {'rep':>3s} {'trainable':>11s} {'total':>11s}  status  config")
    for spec in specs:
        trainable, total = parameter_counts(spec.config, num_classes)
        shown = {k: v for k, v in spec.config.to_dict().items() if v is not None}
        out(f"{spec.trial_id:{i}s} {spec.factor:{f}s} {spec.setting:{s}s} {spec.repeat:3d} {trainable:11,d} {total:11,d}  "
            f"{done.get(spec.trial_id, 'todo'):6s}  {json.dumps(shown)}")
    out(f"{len(specs)} trials, {sum(1 for s in specs if done.get(s.trial_id) in FINISHED)} finished")


# What a finished trial leaves in a run besides its model and checkpoints: its Parquet rows and Tune's files. Four
# times what seed-299's 36 trials left (76 KB each: trials, epochs and tune folders), for longer histories.
TRIAL_FILES_BYTES = 300 * 2**10
# A saved .keras model weighs 1.01-1.03x its float32 weights for LeNet and 1.19x for Inception-v3 (HDF5's own
# overhead; measured on the smoke study's 12 models): 1.25x, and a megabyte for its config. A checkpoint holds the
# weights and at most Adam's two moments of each; Tune writes the next before it deletes the last: two per trial.
MODEL_BYTES_PER_PARAM, MODEL_OVERHEAD_BYTES = 1.25 * 4, 2**20


def space_needed(specs: list[TrialSpec], keep_models: str, concurrency: int, num_classes: int) -> int:
    """Bytes the trials `specs` will write to the run at most: their models (all kept until the run is complete,
    under --keep-models best or all), two checkpoints for each of the `concurrency` largest, and their Parquet."""
    from beanlib.studies import estimated_params

    params = sorted((estimated_params(s.config, num_classes) for s in specs), reverse=True)
    models = sum(int(MODEL_BYTES_PER_PARAM * p) + MODEL_OVERHEAD_BYTES for p in params) if keep_models != "none" else 0
    checkpoints = sum(2 * 3 * 4 * p for p in params[:concurrency])
    return models + checkpoints + len(specs) * TRIAL_FILES_BYTES


def free_space(uri: str) -> int | None:
    """Free bytes on the filesystem of a local results path (its nearest existing folder); None for a URI."""
    import shutil

    if "://" in uri and not uri.startswith("file://"):
        return None
    path = os.path.abspath(uri.removeprefix("file://"))
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def check_space(store: "RunStore", todo: list[TrialSpec], keep_models: str, concurrency: int, num_classes: int) -> None:
    """Refuse, before any training, a sweep whose writes will not fit in the free space at a local --results."""
    need, free = space_needed(todo, keep_models, concurrency, num_classes), free_space(store.uri)
    if free is not None and need > free:
        raise BeanlibError(f"{store.uri} has {_mb(free)} free, and the {len(todo)} trial(s) to run will write up to "
                           f"{_mb(need)} there (models kept under --keep-models {keep_models}, {concurrency} running "
                           "trial(s)' checkpoints, Parquet): free space, pass --results on a larger disk, or use "
                           "--keep-models none or --max-concurrent 1")


def no_space_line(store: "RunStore", todo: list[TrialSpec], keep_models: str, num_classes: int) -> str:
    """The one line for a sweep stopped by a full disk: where, how much is free, what the rest needs, how to go on."""
    free = free_space(store.uri)
    where = f"{store.uri} is full" + (f" ({_mb(free)} free)" if free is not None else "")
    return (f"no space left on device: {where}; the {len(todo)} trial(s) not finished need up to "
            f"{_mb(space_needed(todo, keep_models, 1, num_classes))} more there (one at a time): free space (or pass "
            "--keep-models none), then run the same command: it resumes, and every finished trial is kept")


def _mb(size: int) -> str:
    return f"{size / 2**20:,.0f} MB" if size >= 2**20 else f"{size / 2**10:,.0f} KB"


CONNECT_SECONDS = 30.0  # how long a cluster address may refuse connections before the sweep gives up (Ray: minutes)


def check_reachable(address: str) -> None:
    """Refuse, within CONNECT_SECONDS, a cluster address where nothing listens; Ray itself would wait for minutes.
    "auto" and "local" are left to Ray (it finds or starts the cluster on this machine)."""
    host, port = _host_port(address)
    if host is None:
        return
    deadline = time.monotonic() + CONNECT_SECONDS
    while True:
        try:
            with socket.create_connection((host, port), timeout=5):
                return
        except OSError as error:  # refused, timed out, unknown host: a head that is starting may refuse a while
            if time.monotonic() >= deadline:
                raise BeanlibError(f"no Ray cluster answers at {address} ({error.strerror or type(error).__name__}, for "
                                   f"{CONNECT_SECONDS:.0f}s): check that its head is up (`ray status` there) and that port "
                                   f"{port} is open from this machine, or leave out --address to run here") from None
            time.sleep(2)


def join_refused(address: str, error: BaseException) -> str:
    """The one line for a cluster that answers but would not let this driver join (a token, a Ray version)."""
    from importlib.metadata import version

    return (f"the Ray cluster at {address} answers but did not let this driver join ({type(error).__name__}: "
            f"{(str(error).splitlines() or [''])[0][:160]}): if it uses token authentication (RAY_AUTH_MODE=token), give "
            "this driver its token (RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH naming the token file); else check that it "
            f"runs Ray {version('ray')}, as this driver does")


def _host_port(address: str) -> tuple[str | None, int]:
    """(host, port) of a Ray address: HOST:PORT (the GCS, default 6379) or ray://HOST:PORT (Ray Client, 10001)."""
    if address in ("auto", "local"):
        return None, 0
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rstrip("/").partition(":")
    return host, int(port) if port.isdigit() else (10001 if scheme == "ray" else 6379)
