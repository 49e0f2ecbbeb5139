"""The import graph of pipeline/ and trainer/: one way, no circles, no entry point imported, every
module on its floor (a package imports only packages below it, lazy imports in functions included), and
the modules that must run without TensorFlow (the device machines have none) free of it."""

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = {"train_main", "beam_main", "mine_main"}


def _modules() -> dict[str, str]:
    out = {}
    for package in ("pipeline", "trainer"):
        for directory, _, files in os.walk(os.path.join(REPO, package)):
            for f in files:
                if f.endswith(".py"):
                    name = os.path.relpath(os.path.join(directory, f), REPO)[:-3].replace(os.sep, ".")
                    out[name.removesuffix(".__init__")] = os.path.join(directory, f)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules (and entry points) it imports anywhere in its file, lazily or not."""
    modules = _modules()
    known = set(modules) | ENTRY_POINTS
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets.add(node.module)
                targets.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_check_sees_a_circle_and_an_entry_point():  # the checks below can fail
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = import_graph()
    assert "trainer.cli" in graph and "trainer.model.export" in graph["trainer.cli"]


def test_imports_run_one_way():
    graph = import_graph()
    assert cycles(graph) == []
    assert {m: sorted(t & ENTRY_POINTS) for m, t in graph.items() if t & ENTRY_POINTS} == {}
    assert {
        m: sorted(t) for m, t in graph.items() if m.startswith("pipeline") and any(x.startswith("trainer") for x in t)
    } == {}
    # Each command's main is imported by nothing: the console scripts call it.
    assert [m for m, t in graph.items() if {"trainer.cli", "trainer.plan.planner"} & t] == []


# The floors, lowest first: a module imports modules of its own floor or below. The trainer's core is
# what every stage shares (the config and its flags, the mesh and the hosts, prompts, logging); the
# planner (trainer/plan/) is a tool on top of the run it plans; the commands sit above everything.
FLOORS = (
    ("pipeline",),
    (
        "trainer",
        "trainer.config",
        "trainer.flags",
        "trainer.devices",
        "trainer.mesh",
        "trainer.multihost",
        "trainer.prompts",
        "trainer.tf_log",
    ),
    ("trainer.data",),
    ("trainer.model",),
    ("trainer.train",),
    ("trainer.evaluators", "trainer.mining"),
    ("trainer.plan",),
    ("trainer.cli",),
)
# The one arrow that runs back up, drawn by package: the training loop runs the evaluations it is
# configured with (trainer/evaluators/suite.py) before, during and after training.
UPWARD = {("trainer.train.train_loop", "trainer.evaluators.suite")}


def floor(module: str) -> int:
    """The floor of a module: that of the longest FLOORS entry it is or lies in."""
    best = max(
        (name for names in FLOORS for name in names if module == name or module.startswith(name + ".")),
        key=len,
        default=None,
    )
    if best is None:
        raise KeyError(f"{module} is on no floor: add it to FLOORS")
    return next(i for i, names in enumerate(FLOORS) if best in names)


def upward(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(module, import) pairs where the import lies on a higher floor."""
    return {(m, t) for m, targets in graph.items() for t in targets if t not in ENTRY_POINTS and floor(t) > floor(m)}


def test_the_floor_check_sees_an_import_that_runs_up():
    assert upward(
        {
            "trainer.data.batches": {"trainer.plan.planner", "trainer.config"},
            "trainer.cli": {"trainer.train.train_loop"},
        }
    ) == {("trainer.data.batches", "trainer.plan.planner")}
    assert floor("trainer.config") == 1 and floor("trainer.data") == 2 and floor("trainer.plan.tpu") == 6


def test_every_module_is_on_its_floor():
    graph = import_graph()
    assert upward(graph) == UPWARD
    # Drawn by package, one arrow runs back up.
    assert len({(floor(m), floor(t)) for m, t in upward(graph)}) == 1
    # The planner is a tool on top: nothing below it imports it.
    assert {
        m
        for m, targets in graph.items()
        if floor(m) < floor("trainer.plan") and any(t.startswith("trainer.plan") for t in targets)
    } == set()


def test_the_device_side_and_host_agreement_import_without_tensorflow():
    # Nor Beam: the trainer reads the job's manifest (pipeline/manifest.py, pipeline/stats.py) without it
    # (2 CPU s of every training process's start-up, with pandas and pymongo behind it).
    code = (
        "import sys; sys.modules['tensorflow'] = sys.modules['apache_beam'] = None\n"  # an import of either fails
        "import trainer.multihost, trainer.model.modeling, trainer.train.loss, trainer.train.train_step\n"
        "import trainer.evaluators.suite  # train_main.py checks its inputs before TensorFlow starts\n"
        "print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def _defined_names(path: str) -> set[str]:
    """Top-level and nested names a module file defines or imports (what `from it import name` can find)."""
    names = set()
    for n in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, (ast.Assign, ast.AnnAssign)):
            for t in n.targets if isinstance(n, ast.Assign) else [n.target]:
                names.update(e.id for e in ast.walk(t) if isinstance(e, ast.Name))
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in n.names)
    return names


def test_benchmarks_scripts_and_entry_points_import_what_exists():
    """bench/, scripts/ and the entry points import the project lazily inside functions, where nothing
    else runs them in CI: every `from pipeline... / trainer... import name` must name a module that
    exists and a name it defines (a module rename once left bench/bench_beir.py importing a gone module)."""
    modules = _modules()
    files = [os.path.join(REPO, d, f) for d in ("bench", "scripts") for f in sorted(os.listdir(os.path.join(REPO, d)))]
    files += [os.path.join(REPO, f"{name}.py") for name in sorted(ENTRY_POINTS)]
    broken = []
    for path in (f for f in files if f.endswith(".py")):
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").split(".")[0]
                in (
                    "pipeline",
                    "trainer",
                )
            ):
                if node.module not in modules:
                    broken.append(f"{os.path.relpath(path, REPO)}:{node.lineno}: no module {node.module}")
                    continue
                defined = _defined_names(modules[node.module])
                broken += [
                    f"{os.path.relpath(path, REPO)}:{node.lineno}: {node.module} has no {a.name}"
                    for a in node.names
                    if a.name not in defined and f"{node.module}.{a.name}" not in modules
                ]
            elif isinstance(node, ast.Import):
                broken += [
                    f"{os.path.relpath(path, REPO)}:{node.lineno}: no module {a.name}"
                    for a in node.names
                    if a.name.split(".")[0] in ("pipeline", "trainer") and a.name not in modules
                ]
    assert broken == []
