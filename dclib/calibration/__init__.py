"""Calibrated probabilities from denoising errors: temperature and vector scaling, ECE, reliability diagrams.

**Temperature units.** The paper's posterior (eq. 6, uniform prior) is a softmax over the *summed* squared error
of the noise prediction::

    p(c | x) = exp(-E_t,eps ||eps - eps_theta(x_t, c)||^2) / sum_j exp(-E_t,eps ||eps - eps_theta(x_t, c_j)||^2)

with ``||.||^2`` summed over all ``d`` elements of the noise (``d = 256`` for the 1x16x16 MNIST model,
``4 * 64 * 64 = 16384`` for SD 2 latents at 512 px; :func:`noise_elements`). dclib's errors are per-element means,
``e = ||eps - eps_theta||^2 / d`` (as the official code's ``mse_loss(...).mean(dim=(1, 2, 3))``), and its
temperature divides those: ``softmax(-e / T)`` (:func:`dclib.decide.posterior`). Both are the same posterior when

    T_paper = d * T        (:func:`paper_temperature`, :func:`per_element_temperature`)

so dclib's default ``T = 1`` is the paper's ``T = d``: ``d`` times flatter than eq. 6, and nearly uniform because
per-element class errors differ in the third or fourth decimal. That flatness is an artifact of the
normalisation, not a property of eq. 6. Eq. 6 itself (paper ``T = 1``, dclib ``T = 1 / d``) turns the same gaps
into ``d`` times larger logits; whether that is over- or under-confident depends on the model, ``d`` and the
number of samples (notebooks/calibration.ipynb measures it). The paper only takes eq. 6's argmax, which no
temperature changes, and nothing in the method fixes ``T``; this package fits it (or a per-class affine map) on a
labelled calibration set, as post-hoc calibration does for any classifier (Guo et al., ICML 2017). A
:class:`Calibrator` given ``n_elements = d`` reports every temperature in both units (its file, its reliability
labels); ``temperature`` fields stay in dclib's per-element units, which the errors are stored in. With another
loss (``l1``, ``huber``) "the paper's units" means the summed loss, by the same factor ``d``.

**Logits.** For image ``i`` and class ``k``, ``z[i, k] = -(e[i, k] - min_j e[i, j])`` where ``e[i, k]`` is the class
error of :func:`dclib.decide.class_errors`: the mean error of the class's best conditioning over the samples it
was scored on. A class without any candidate conditioning has ``e = inf`` and gets probability exactly 0.

**Per-image normalisation** (``normalize=True``, the default) subtracts each image's lowest error. Softmax is
shift-invariant, and so is temperature scaling (``(z - m) / T = z / T - m / T``: one constant per row), so for
``method="temperature"`` it changes nothing but the size of the numbers. Vector scaling is *not* shift-invariant
(``a_k (z_k - m) + b_k`` moves each class by ``a_k m``), and the absolute error level of an image (its contrast,
how hard it is to denoise at all) is a nuisance that varies far more between images than the differences between
classes do; without normalisation that level leaks into the per-class scales. Normalising makes the features the
error *gaps* to the best class.

**Methods.**

- ``temperature``: ``p = softmax(z / T)``, one scalar ``T > 0`` fitted by minimising the mean negative
  log-likelihood (NLL) on the calibration set. The NLL is convex in ``1 / T``, hence unimodal in ``log T``; it is
  minimised by a bounded 1-D search over ``log T`` (scipy's bounded Brent), from a data-driven starting scale
  and over +-30 nats around it, so errors of any magnitude (SD's ~1e-1 or a tiny model's ~1e-3) work. The
  labels are smoothed by 1 / (n + 2) by default (``smoothing``), so a calibration set the classifier gets all
  right gives a confidence near (n + 1) / (n + 2), not certainty. With ``smoothing=0`` and every image right,
  the NLL keeps falling as ``T -> 0``; the fit then stops at the bound and ``fitted_on["at_bound"]`` says so.
- ``vector``: ``p = softmax(a * z + b)`` with a per-class scale ``a_k = exp(u_k) / T`` (``T`` from temperature
  scaling, so ``a_k > 0`` and a lower error always means a higher logit) and bias ``b_k``. ``u`` and ``b`` are
  fitted with L-BFGS-B on ``mean NLL + l2 / 2 * (sum u_k^2 + sum b_k^2)`` (``l2 = 0.01`` by default): light
  regularisation towards temperature scaling (``u = 0, b = 0``), which also pins the bias (softmax ignores a
  common shift) and keeps classes absent from the calibration set at the temperature-scaled answer.

**Pruned classes** (Algorithm 2, paired pruning). A conditioning pruned after an early stage keeps an
estimate from the samples it saw, never probability zero: :attr:`dclib.decide.Classification.mean_errors` gives
it the winner's mean plus its paired mean difference to the winner on those samples
(:func:`dclib.decide.paired_mean_errors`), which puts it on the winner's footing (a raw partial mean comes from
other, possibly easier, samples and could even undercut the winner). A calibrator acts on that class-error
vector, exactly as :attr:`~dclib.decide.Classification.probabilities` does, so a pruned class gets a small but
nonzero calibrated probability. The estimate rests on fewer samples and the calibrator does not model that, so
fit it on runs with the same schedule you will classify with (the error scale depends on the schedule, the
number of trials, the loss and the model; a mismatch is warned about by the CLI).

Metrics: :func:`expected_calibration_error` (equal-width bins, default 15, with the maximum calibration error),
:func:`calibration_metrics` (ECE, MCE, NLL, Brier, accuracy), :func:`reliability` (per-bin confidence, accuracy,
count) and :func:`plot_reliability`.

**Modules.** ``logits`` (logits from class errors, temperature units), ``metrics`` (reliability, ECE, NLL, Brier),
``fit`` (the temperature and vector fitters), ``calibrator`` (:class:`Calibrator` and its file), ``data``
(labelled class errors from classifications or an ErrorSet), ``plots`` (reliability diagrams) and ``compare``
(the calibration page's fit/test split and comparison table). Loading a
labelled set from an ``evaluate`` run folder or a saved ErrorSet is :mod:`dclib.calibration_data`: it reads run
folders, so it sits above both this package and :mod:`dclib.runs`, and this package imports neither.
"""
from .compare import (FitTestSplit, compare_calibrations, describe_comparison, fit_test_sizes, posterior_table,
                      split_fit_test)
from .calibrator import FORMAT, METHODS, SOURCE_KEYS, Calibrator, json_safe, source_mismatches
from .data import CalibrationData, class_errors_from_classifications, class_errors_from_error_set
from .fit import fit_temperature, fit_vector
from .logits import (format_temperature, logits_from_errors, noise_elements, paper_temperature,
                     per_element_temperature, uncalibrated_probabilities)
from .metrics import (DEFAULT_BINS, Reliability, brier_score, calibration_metrics, expected_calibration_error,
                      negative_log_likelihood, reliability)
from .plots import plot_reliability

__all__ = ["FitTestSplit", "compare_calibrations", "describe_comparison", "fit_test_sizes", "posterior_table",
           "split_fit_test", "FORMAT", "METHODS", "SOURCE_KEYS", "Calibrator", "json_safe", "source_mismatches",
           "CalibrationData",
           "class_errors_from_classifications", "class_errors_from_error_set", "fit_temperature", "fit_vector",
           "format_temperature", "logits_from_errors", "noise_elements", "paper_temperature", "per_element_temperature",
           "uncalibrated_probabilities", "DEFAULT_BINS", "Reliability", "brier_score", "calibration_metrics",
           "expected_calibration_error", "negative_log_likelihood", "reliability", "plot_reliability"]
