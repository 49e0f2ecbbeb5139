"""The import graph of pipeline/ and trainer/: one way, no circles, no entry point imported, and the
modules that must run without TensorFlow (the device machines have none) free of it."""
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
    assert {m: sorted(t) for m, t in graph.items()
            if m.startswith("pipeline") and any(x.startswith("trainer") for x in t)} == {}
    # Each command's main is imported by nothing: the console scripts call it.
    assert [m for m, t in graph.items() if {"trainer.cli", "trainer.plan.planner"} & t] == []


def test_the_device_side_and_host_agreement_import_without_tensorflow():
    code = ("import sys; sys.modules['tensorflow'] = None\n"  # an import of it fails
            "import trainer.multihost, trainer.model.modeling, trainer.train.loss, trainer.train.train_step\n"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
