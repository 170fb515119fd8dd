"""One object for everything that decides how an image is classified, spelled out once.

``ClassifySettings`` is what ``DiffusionClassifier.classify``, ``dclib.runs.evaluate``, the command line, a run's
``config.json`` and a calibration file's source all read: the schedule, noises per timestep, the noise seed, the
scoring options (:class:`dclib.scoring.ScoreOptions`), the noise distribution and the batch size. Every value is
checked when the object is built, so a typo fails before any model is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from .errors import InputError
from .noise import NoiseDistribution
from .schedules import PairedPruning, Schedule, parse_schedule
from .scoring import ScoreOptions


@dataclass(frozen=True)
class ClassifySettings:
    """How to classify: ``schedule`` (``N``, ``"KEEP,...:TRIALS,..."`` or ``"paired:N"``, see
    :func:`dclib.schedules.parse_schedule`), ``n_trials`` noises per timestep, ``seed`` (noise is keyed by seed and
    image), ``loss``/``objective``/``guidance``/``crop`` (:class:`dclib.scoring.ScoreOptions`), ``noise``
    (:class:`dclib.noise.NoiseDistribution`) and ``batch_size`` ((conditioning, sample) pairs per denoiser call, or
    ``"auto"``; it changes speed, not results)."""

    schedule: str | int | Schedule | PairedPruning = 100
    n_trials: int = 1
    seed: int = 0
    loss: str = "l2"
    objective: str = "uniform"
    guidance: float = 0.0
    crop: int = 0
    noise: str | NoiseDistribution | None = "normal"
    batch_size: int | str = "auto"
    parsed_schedule: Schedule | PairedPruning = field(init=False, repr=False, compare=False)
    score_options: ScoreOptions = field(init=False, repr=False, compare=False)
    noise_distribution: NoiseDistribution = field(init=False, repr=False, compare=False)

    #: The settings that decide the numbers, as a run's config.json and a classification's report spell them.
    KEYS = ("schedule", "n_trials", "seed", "loss", "objective", "guidance", "crop", "noise")
    #: ... less the seed, which picks the noise draw but not what is measured: the settings a calibration must
    #: share with the classifications it is applied to.
    METHOD_KEYS = tuple(k for k in KEYS if k != "seed")

    def __post_init__(self):
        object.__setattr__(self, "parsed_schedule", parse_schedule(self.schedule, self.n_trials))
        object.__setattr__(self, "score_options", ScoreOptions(loss=self.loss, objective=self.objective,
                                                               guidance=self.guidance, crop=self.crop))
        object.__setattr__(self, "noise_distribution", NoiseDistribution.parse(self.noise))
        if self.batch_size != "auto" and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise InputError("batch_size must be a positive integer or 'auto'")

    @classmethod
    def from_options(cls, **options) -> "ClassifySettings":
        """Settings from keyword arguments, refusing names that are not settings in one line."""
        names = [f.name for f in fields(cls) if f.init]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise InputError(f"unknown classification option(s) {', '.join(unknown)}; options: {', '.join(names)}")
        return cls(**options)

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifySettings":
        """Read back :meth:`to_dict` (a run's config.json, or a classification's report); other keys are ignored."""
        return cls(**{k: d[k] for k in (*cls.KEYS, "batch_size") if k in d})

    @classmethod
    def resolve(cls, settings: "ClassifySettings | None" = None, **options) -> "ClassifySettings":
        """``settings`` with ``options`` (any of its fields) put over it; the defaults when both are absent."""
        if settings is None:
            return cls.from_options(**options)
        if not options:
            return settings
        current = {f.name: getattr(settings, f.name) for f in fields(cls) if f.init}
        return cls.from_options(**{**current, **options})

    def to_dict(self) -> dict:
        """The settings that decide the numbers, in their canonical spelling (the schedule and noise as their
        specs): what config.json records and what a resumed run must match. The batch size is left out."""
        return {"schedule": str(self.parsed_schedule), "n_trials": self.n_trials, "seed": self.seed,
                **self.score_options.to_dict(), "noise": str(self.noise_distribution)}

    def method_dict(self) -> dict:
        """:meth:`to_dict` without the seed (see ``METHOD_KEYS``)."""
        return {k: v for k, v in self.to_dict().items() if k in self.METHOD_KEYS}
