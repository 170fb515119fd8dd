"""What a book page starts from: its parameters, the shared ones declared once, checked against what papermill set.

A page's parameters cell holds what is particular to it: its model and dataset, its sizes (``n_images``,
``n_timesteps`` ...) and its own knobs. The parameters every experiment page shares (which split, prompts and
template, the image order, resolution, dtype, device, batch size, seed, label mapping) are declared here once, as
the fields of :class:`ExperimentSpec` with their defaults, and papermill may set any of them on any experiment page
(``-p dtype float16 -p device cuda``; papermill itself warns "Passed unknown parameter" for them, as they are not
in the page's own cell).

The cell after the parameters cell calls :func:`start_page` with the page's ``globals()``. It

* stops with one line when papermill passed a parameter the page does not take (a typo such as ``n_image`` would
  otherwise be injected as a new variable and ignored, and the page would run with its defaults);
* sets each shared parameter the page did not set to its default, in the page's namespace;
* shows the run's parameters as a table, the ones papermill set marked, so the rendered page says what it ran with.

What papermill set is read from the kernel's input history: papermill runs its injected cell, which starts with
``# Parameters``, right after the page's parameters cell. Without an injected cell (nbval, a run by hand) the table
lists the variables the page has set so far, which right after its parameters cell are its parameters.
"""
from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass, fields

import pandas as pd

from .errors import InputError
from .experiments import Experiment, compare_settings, open_experiment
from .plan import even_plan
from .prompts import DEFAULT_TEMPLATE

INJECTED_HEADER = "# Parameters\n"  # the first line of papermill's injected cell (its default `comment`)


@dataclass(frozen=True)
class ExperimentSpec:
    """The parameters shared by the pages that classify a dataset, with their defaults.

    ``model``, ``dataset``: set by each page (a hub id, a local folder or ``embedded:NAME``).
    ``split``: a hub dataset's split (None: the only one, else "test").
    ``prompts``: text models: a prompt CSV (prompt,classname,classidx), a text file or a list; None: the dataset's
    own CSV, else ``template`` filled with each class name.
    ``shuffle_seed``: images in a class-stratified random order drawn with it (the paper: random subsets); None: the
    dataset's own order.
    ``resolution``: None, the model's own. ``dtype``: the paper used float16 on a GPU. ``device``: "auto", "cpu",
    "cuda", "mps". ``batch_size``: denoiser inputs per call, or "auto" (the paper: 32). ``seed``: the noise.
    ``label_mapping``: None matches labels to classes by name; "by-index" reads label i as class i.
    """
    model: object = None
    dataset: object = None
    split: str | None = None
    prompts: object = None
    template: str = DEFAULT_TEMPLATE
    shuffle_seed: int | None = 0
    resolution: int | None = None
    dtype: str | None = "float32"
    device: str | None = "auto"
    batch_size: int | str = "auto"
    seed: int = 0
    label_mapping: str | None = None

    def open(self, model=None, dataset=None, *, prompts=..., split=..., n_images: int | None = None) -> Experiment:
        """(classifier, test images, candidate conditionings) of this spec (:func:`dclib.experiments.open_experiment`,
        ``n_images``: the first of its class-stratified order); ``model``/``dataset``/``prompts``/``split`` open
        another half of a page (a second model, the supervised set) with the same shared settings."""
        return open_experiment(self.model if model is None else model, self.dataset if dataset is None else dataset,
                               self.prompts if prompts is ... else prompts, template=self.template, n_images=n_images,
                               split=self.split if split is ... else split, shuffle_seed=self.shuffle_seed,
                               resolution=self.resolution, dtype=self.dtype, device=self.device,
                               label_mapping=self.label_mapping)


#: The shared parameters and their defaults (``model`` and ``dataset`` have none: every page sets its own).
SHARED = {f.name: f.default for f in fields(ExperimentSpec) if f.name not in ("model", "dataset")}


def shared_names(shared) -> list[str]:
    """The shared parameters a page takes, from its ``start_page(shared=...)``: True, all; a list, those; False,
    none."""
    return list(SHARED) if shared is True else list(shared or ())


def assigned_names(source: str) -> list[str]:
    """Names a parameters cell assigns (``name = value`` at the top level), in order; [] if it does not parse."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return []
    return [t.id for node in body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)]


def parameter_cells(history: list[str]) -> tuple[list[str], list[str]]:
    """(names the page's parameters cell declares, names papermill injected) from the kernel's input history, the
    calling cell last: the injected cell is the last one starting with ``# Parameters``, the parameters cell the
    one run just before it (without injection, the one before the calling cell)."""
    injected_at = next((i for i in range(len(history) - 2, -1, -1) if history[i].startswith(INJECTED_HEADER)), None)
    if injected_at is None:
        return (assigned_names(history[-2]) if len(history) >= 2 else []), []
    declared = assigned_names(history[injected_at - 1]) if injected_at >= 1 else []
    return declared, assigned_names(history[injected_at])


def user_variables(namespace: dict) -> list[str]:
    """The variables a notebook's cells have set so far, in the order they were set: right after the parameters
    cell, its parameters (IPython's own names, modules, functions and classes left out)."""
    import inspect

    ipython = {"In", "Out", "get_ipython", "exit", "quit", "open"}
    return [name for name, value in namespace.items() if not name.startswith("_") and name not in ipython
            and not (inspect.ismodule(value) or inspect.isroutine(value) or inspect.isclass(value))]


def check_parameters(declared, injected, shared=()) -> None:
    """One line naming each injected parameter the page does not take (with the nearest it does take): the page
    takes what its parameters cell ``declared`` and the ``shared`` parameters it uses."""
    takes = list(dict.fromkeys([*declared, *shared]))
    unknown = [name for name in dict.fromkeys(injected) if name not in takes]
    if not unknown:
        return
    hints = []
    for name in unknown:
        near = difflib.get_close_matches(name, takes, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    raise InputError(f"this page takes no parameter {', '.join(hints)}; it takes: {', '.join(takes)}")


def parameter_table(namespace: dict, names, injected) -> str:
    """Markdown: one row per parameter with the value this run used; those papermill set are marked."""
    rows = []
    for name in names:
        value = " ".join(repr(namespace.get(name)).split()).replace("|", "&#124;")
        rows.append(f"| `{name}` | `{value}` |" + (" set for this run |" if name in injected else " |"))
    return "**This run's parameters**\n\n| parameter | value | |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n"


def start_page(namespace: dict, shared=True, history: list[str] | None = None) -> ExperimentSpec:
    """Check what papermill passed, fill in the shared defaults, show the parameters; see the module docstring.

    ``namespace``: the page's ``globals()``. ``shared``: which shared parameters the page takes: True, all of them
    (a page that opens its experiment with :meth:`ExperimentSpec.open`); a list of some; False, none (a page with a
    parameters cell of its own). ``history``: the kernel's input history (default: IPython's ``In``).
    Returns the page's :class:`ExperimentSpec`."""
    shared = shared_names(shared)
    unknown_shared = [name for name in shared if name not in SHARED]
    if unknown_shared:
        raise ValueError(f"not shared parameters: {unknown_shared}; the shared ones: {list(SHARED)}")
    if history is None:
        history = list(namespace.get("In") or [])
    declared, injected = parameter_cells(history)
    check_parameters(declared, injected, shared)
    if not injected:  # nothing to check; read the page's parameters off its namespace (nbval keeps no history)
        declared = user_variables(namespace)
    for name in shared:
        namespace.setdefault(name, SHARED[name])
    names = list(dict.fromkeys([*declared, *injected, *shared]))
    _display_markdown(parameter_table(namespace, names, set(injected)))
    return ExperimentSpec(**{f.name: namespace.get(f.name, f.default) for f in fields(ExperimentSpec)})


def page_parameters(path) -> list[str]:
    """Every parameter the page ``path`` (a notebook) takes: the names its parameters cell assigns, then the shared
    ones its :func:`start_page` call takes. (Read with ``ast``, not ``papermill.inspect_notebook``: papermill skips
    any line with two ``=`` signs, such as ``paired = ["paired:20,strata=4"]``.)"""
    import nbformat

    takes = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        if "parameters" in cell.metadata.get("tags", []):
            takes += assigned_names(cell.source)
        code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        call = next((node for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Call)
                     and getattr(node.func, "id", None) == "start_page"), None)
        if call is not None:
            shared = next((ast.literal_eval(k.value) for k in call.keywords if k.arg == "shared"), True)
            return takes + [name for name in shared_names(shared) if name not in takes]
    return takes


def compare_halves(spec: ExperimentSpec, halves: dict[str, dict], n_timesteps: int, kind: str = "kind"):
    """One comparison of scoring settings on each of a page's halves (a zero-shot and a supervised model, an eps-only
    and a learned-variance model), every half opened with the page's shared parameters.

    ``halves``: name -> {``model``, ``dataset``, ``settings`` (those of :func:`dclib.experiments.compare_settings`),
    ``n_images``, optional ``prompts`` and ``split`` (default the spec's), optional ``learned_variance: True`` (the
    model must predict its variance, as DiT does)}. Each half is scored on ``n_timesteps`` evenly spaced timesteps.
    Returns (one table: ``model``, ``kind`` (the half's name, a column named by ``kind``), ``classes``, then
    compare_settings' columns; {half: (its table, its error sets)})."""
    runs = {}
    for name, half in halves.items():
        clf, data, conds = spec.open(half["model"], half["dataset"], prompts=half.get("prompts", spec.prompts),
                                     split=half.get("split", spec.split))
        if half.get("learned_variance") and not clf.adapter.learned_variance:
            raise InputError(f"{half['model']} predicts eps only: {name} needs a model with a learned variance "
                             "(the VLB objectives of Table 5)")
        plan = even_plan(n_timesteps, clf.adapter.num_train_timesteps)
        table, sets = compare_settings(clf, data, half["settings"], plan, n_images=half["n_images"], seed=spec.seed,
                                       conditionings=conds, batch_size=spec.batch_size)
        table.insert(0, "model", str(half["model"]))
        table.insert(1, kind, name)
        table.insert(2, "classes", conds.n_classes)
        runs[name] = (table, sets)
    return pd.concat([table for table, _ in runs.values()], ignore_index=True), runs


def _display_markdown(text: str) -> None:
    try:
        from IPython.display import Markdown, display
    except ImportError:  # plain Python: nothing to render into
        return
    display(Markdown(text))


__all__ = ["ExperimentSpec", "SHARED", "start_page", "page_parameters", "compare_halves", "check_parameters",
           "parameter_cells"]
