"""The module graph ARCHITECTURE.md draws: read from the source with ``ast``, so a change that adds a circle or
climbs a layer fails here, whether the import sits at the top of a module or inside a function."""
import ast
import re
from pathlib import Path

import pytest

from dclib.cli import DEFAULTS, build_parser
from dclib.settings import ClassifySettings

PACKAGE = Path(__file__).resolve().parents[1] / "dclib"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """dclib modules ``path`` imports (a ``from package import name`` of a submodule counts as that submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in modules and t != name)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def reaches(graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_graph_is_read_from_the_source(graph):
    assert "dclib.schedules" in graph["dclib.decide"] or "dclib.decide" in graph["dclib.schedules"]
    assert "dclib.runs.store" in graph["dclib.runs.evaluation"]


ROOT = PACKAGE.parent


def layer_table() -> dict[str, int]:
    """ARCHITECTURE.md's layer table: placed name (``decide``, ``runs/``, ``dclib``) -> layer."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    body = text.split("<!-- layer table: read by tests/test_architecture.py -->", 1)[1]
    body = body.split("<!-- end of layer table -->")[0]
    table = {}
    for row in body.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            for name in re.findall(r"`([^`]+)`", cells[2]):
                assert name not in table, f"{name} is placed twice"
                table[name] = int(cells[0])
    return table


def layer_of(module: str, table: dict[str, int]) -> int | None:
    if module == "dclib":
        return table.get("dclib")
    parts = module.split(".")[1:]
    return table.get(parts[0] + "/") if len(parts) > 1 or (PACKAGE / parts[0]).is_dir() else table.get(parts[0])


def climbing_imports(graph: dict[str, set[str]], table: dict[str, int]) -> list[str]:
    """Every import that climbs a layer, and every module the table does not place."""
    problems = [f"{m} is in no layer of ARCHITECTURE.md" for m in graph if layer_of(m, table) is None]
    for module, targets in graph.items():
        low = layer_of(module, table)
        problems += [f"{module} (layer {low}) imports {t} (layer {layer_of(t, table)})" for t in sorted(targets)
                     if low is not None and layer_of(t, table) is not None and layer_of(t, table) > low]
    return problems


def test_every_import_stays_in_its_layer_or_below(graph):
    table = layer_table()
    assert len(table) >= 30 and table["errors"] == 0 and table["dclib"] == max(table.values())
    assert climbing_imports(graph, table) == []


def test_an_upward_import_or_an_unplaced_module_fails(graph):
    table = layer_table()
    injected = {**graph, "dclib.errors": graph["dclib.errors"] | {"dclib.classifier"}}
    assert climbing_imports(injected, table) == ["dclib.errors (layer 0) imports dclib.classifier (layer 3)"]
    unplaced = climbing_imports({**graph, "dclib.newthing": set()}, table)
    assert unplaced == ["dclib.newthing is in no layer of ARCHITECTURE.md"]


def test_no_module_imports_itself_back(graph):
    assert sorted(m for m in graph if m in reaches(graph, m)) == []


@pytest.mark.parametrize("low, high", [
    # data flows one way: plan -> score -> decide; scoring and deciding never see each other
    ("dclib.plan", "dclib.scoring"), ("dclib.plan", "dclib.decide"), ("dclib.scoring", "dclib.decide"),
    ("dclib.decide", "dclib.scoring"), ("dclib.decide", "dclib.schedules"), ("dclib.schedules", "dclib.pruning"),
    # the core knows nothing of run folders, experiments or the classifier built on it
    ("dclib.schedules", "dclib.classifier"), ("dclib.scoring", "dclib.runs"), ("dclib.settings", "dclib.runs"),
    # calibration sits below run folders: loading one is dclib.calibration_data's job
    ("dclib.calibration", "dclib.runs"), ("dclib.calibration", "dclib.experiments"),
    ("dclib.stats", "dclib.runs"), ("dclib.runs", "dclib.experiments"), ("dclib.runs", "dclib.calibration"),
    # the transformers pipeline wraps the classifier, which never needs transformers' pipelines
    ("dclib.classifier", "dclib.hf_pipeline"),
])
def test_layers(graph, low, high):
    below = {m for m in graph if m == low or m.startswith(low + ".")}
    climbing = sorted(m for m in below if high in reaches(graph, m) or any(
        r == high or r.startswith(high + ".") for r in reaches(graph, m)))
    assert climbing == [], f"{climbing} reach {high}"


def test_the_command_line_takes_its_defaults_from_the_settings():
    args = build_parser().parse_args(["evaluate", "--model", "m", "--dataset", "d", "--out", "o"])
    from_cli = ClassifySettings.from_options(**{k: getattr(args, k) for k in (*ClassifySettings.KEYS, "batch_size")})
    assert from_cli == DEFAULTS == ClassifySettings()
    assert from_cli.to_dict() == ClassifySettings().to_dict()


def test_settings_round_trip_and_refuse_unknown_names():
    s = ClassifySettings(schedule="5,1:25,250", n_trials=2, seed=3, loss="l1", crop=1, noise="truncated:-2,2")
    assert ClassifySettings.from_dict(s.to_dict()).to_dict() == s.to_dict()
    assert s.to_dict()["schedule"] == "5,1:25,250" and s.to_dict()["noise"] == str(s.noise_distribution)
    assert "seed" not in s.method_dict() and set(s.method_dict()) == set(ClassifySettings.METHOD_KEYS)
    assert ClassifySettings.resolve(s, seed=4).seed == 4 and ClassifySettings.resolve(s, seed=4).loss == "l1"
    from dclib.errors import InputError

    with pytest.raises(InputError, match="unknown classification option"):
        ClassifySettings.from_options(shedule="100")
    with pytest.raises(InputError):
        ClassifySettings(schedule="5,2:10,100")  # the KeepList must end in 1: caught before any model loads


def private_imports(source: str) -> list[str]:
    """Names starting with one underscore that a module imports from another dclib module (``from .x import _y``):
    a private helper another module needs is part of an interface and gets a public name."""
    return [alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)
            and (node.level or (node.module or "").startswith("dclib")) for alias in node.names
            if alias.name.startswith("_") and not alias.name.startswith("__")]


def test_no_module_imports_another_modules_private_names():
    assert private_imports("from .store import _warn, merge\nfrom os import _exit\n") == ["_warn"]
    found = {module_name(p): private_imports(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}
    assert not {m: names for m, names in found.items() if names}
