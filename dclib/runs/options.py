"""The options of ``dclib.runs.evaluate``, in the groups a reader thinks in: how the model is loaded
(:class:`LoadOptions`), which rows of which dataset are classified (:class:`Selection`) and how the run folder is
written (:class:`RunOptions`); how each image is classified is :class:`dclib.settings.ClassifySettings`.

``evaluate`` takes each group as one argument or any of their fields as a flat keyword (as the command line passes
them); :func:`split_options` routes flat keywords to their group and refuses a name that belongs to none, in one
line.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..errors import InputError
from ..settings import ClassifySettings


@dataclass(frozen=True)
class LoadOptions:
    """How the model is loaded (unused when ``evaluate`` is given a loaded classifier). ``lora`` loads LoRA weights
    into the denoiser; it is recorded in the run's config, so a resume must load the same."""

    dtype: str = "float32"
    device: str | None = "auto"
    resolution: int | None = None
    revision: str | None = None
    autocast: str | None = None
    compile: bool | str = False
    lora: str | None = None


@dataclass(frozen=True)
class Selection:
    """Which rows are classified. ``split`` of a hub dataset; ``subset``: a file of indices, a list, or a number of
    rows drawn with ``subset_seed``; ``limit`` keeps that many of the selection, a class-stratified sample drawn with
    ``subset_seed`` (``limit_mode="first"``: its first rows). ``image_column`` and ``label_column`` name the columns
    where they are not found by themselves. ``label_mapping``: dataset labels are matched to the conditionings'
    classes by name, and a mismatch stops; ``"by-index"`` (asked for explicitly) reads label i as class i."""

    split: str | None = None
    subset: object = None
    subset_seed: int = 0
    limit: int | None = None
    limit_mode: str = "stratified"
    image_column: str | None = None
    label_column: str | None = None
    label_mapping: str | None = None


@dataclass(frozen=True)
class RunOptions:
    """How the run folder is written: ``save_errors`` keeps each image's error matrix; ``retry_failed`` classifies
    failed rows again on resume; finished rows are flushed every ``flush_rows`` rows or ``flush_seconds``."""

    save_errors: bool = False
    retry_failed: bool = False
    flush_rows: int = 16
    flush_seconds: float = 30.0
    progress: bool = True


GROUPS = (LoadOptions, Selection, RunOptions)


def split_options(options: dict, loading: LoadOptions | None = None, selection: Selection | None = None,
                  run: RunOptions | None = None,
                  settings: ClassifySettings | None = None) -> tuple[LoadOptions, Selection, RunOptions,
                                                                     ClassifySettings]:
    """The four groups, each with the flat keywords of ``options`` that are its fields put over it (a given group,
    else the defaults); the rest must be fields of :class:`ClassifySettings`."""
    groups = []
    rest = dict(options)
    for cls, given in zip(GROUPS, (loading, selection, run)):
        names = {f.name for f in fields(cls)}
        mine = {k: rest.pop(k) for k in list(rest) if k in names}
        groups.append(replace(given or cls(), **mine))
    known = {f.name for f in fields(ClassifySettings) if f.init}
    unknown = sorted(set(rest) - known)
    if unknown:
        every = sorted(known | {f.name for cls in GROUPS for f in fields(cls)})
        raise InputError(f"unknown evaluate option(s) {', '.join(unknown)}; options: {', '.join(every)}")
    return (*groups, ClassifySettings.resolve(settings, **rest))
