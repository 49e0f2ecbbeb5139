"""cloud/launch.py: the printed commands are exact (shlex round trip), use real flags of Beam,
beam_main.py, train_main.py and the Dockerfile, reach every worker of a pod slice, and the remote
shell scripts are valid bash that computes the right multi-host flags."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "cloud"))
import launch  # noqa: E402

IMAGE = "us-central1-docker.pkg.dev/proj/sentence-embedding/sentence-embedding-training"
TRICKY = '--model_card_note=it\'s a "quoted" $HOME value'  # a flag value the quoting must keep intact


def _dry_run(*argv: str) -> list[list[str]]:
    """Runs the CLI as a user would; returns each printed command as argv (comments skipped)."""
    # --dry_run right after the subcommand: anything after `--` belongs to beam_main / train_main.
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "cloud", "launch.py"), argv[0], "--dry_run", *argv[1:]],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    return [shlex.split(line) for line in out.splitlines() if line and not line.startswith("#")]


def _command_of(argv: list[str]) -> str:
    (cmd,) = [a[len("--command=") :] for a in argv if a.startswith("--command=")]
    return cmd


def _bash_syntax_ok(script: str) -> None:
    r = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "sub",
    [
        ["image", "--project=proj", "--accelerator=tpu"],
        ["image", "--project=proj", "--builder=docker", "--create_repository"],
        ["dataflow", "--project=proj", "--bucket=gs://b", "--", TRICKY],
        ["tpu", "--project=proj", "--bucket=gs://b", "--spot", "--", TRICKY],
        ["tpu", "--project=proj", "--bucket=gs://b", "--install=pip", "--accelerator_type=v3-32", "--recreate"],
    ],
)
def test_printed_lines_round_trip_to_the_commands_that_would_run(sub):
    printed = _dry_run(*sub)
    assert printed == [s.argv for s in launch.steps_for(sub)]
    assert len(printed) >= 1


def test_dataflow_command_uses_real_beam_and_beam_main_flags():
    from apache_beam.options.pipeline_options import (
        DebugOptions,
        GoogleCloudOptions,
        PipelineOptions,
        SetupOptions,
        StandardOptions,
        WorkerOptions,
    )

    from pipeline.options import parse_args

    (argv,) = _dry_run(
        "dataflow",
        "--project=proj",
        "--region=europe-west4",
        "--bucket=gs://b/",
        "--machine_type=n2-highcpu-16",
        "--max_num_workers=250",
        "--num_workers=20",
        "--",
        "--corpora=gooaq,altlex",
    )
    assert argv[:2] == ["python", "beam_main.py"]
    job, beam_args = parse_args(argv[2:])  # beam_main.py's own parser
    assert (job.input_root, job.output_dir, job.data_config) == ("gs://b/corpora", "gs://b/data", "data_config.json")
    assert job.tokenizer == "FacebookAI/roberta-large" and job.max_seq_length == 128
    assert job.corpora == ("gooaq", "altlex")
    opts = PipelineOptions(beam_args)
    known = opts.get_all_options()
    for a in beam_args:  # PipelineOptions drops unknown flags silently: every one must be a real option
        assert a.startswith("--") and a[2:].split("=")[0] in known, a
    w, g = opts.view_as(WorkerOptions), opts.view_as(GoogleCloudOptions)
    assert opts.view_as(StandardOptions).runner == "DataflowRunner"
    assert (g.project, g.region) == ("proj", "europe-west4")
    assert (g.staging_location, g.temp_location) == ("gs://b/dataflow/staging", "gs://b/dataflow/temp")
    assert w.sdk_container_image == IMAGE.replace("us-central1", "europe-west4") + ":cpu"
    assert (w.machine_type, w.num_workers, w.max_num_workers) == ("n2-highcpu-16", 20, 250)
    assert w.autoscaling_algorithm == "THROUGHPUT_BASED"
    assert "use_runner_v2" in opts.view_as(DebugOptions).experiments
    assert opts.view_as(SetupOptions).sdk_location == "container"


def test_dataflow_extra_flags_arrive_verbatim():
    (argv,) = _dry_run("dataflow", "--project=proj", "--bucket=gs://b", "--image=my/img:1", "--", TRICKY)
    assert argv[-1] == TRICKY
    assert "--sdk_container_image=my/img:1" in argv


def test_bad_arguments_are_refused_with_a_message():
    for bad, msg in (
        (["dataflow", "--project=p", "--bucket=/local/dir"], "--bucket must be a gs:// URL"),
        (
            ["dataflow", "--project=p", "--bucket=gs://b", "--num_workers=5", "--max_num_workers=2"],
            "--max_num_workers must be at least --num_workers",
        ),
        (["tpu", "--project=p", "--bucket=gs://b", "--workdir=/tmp/run"], "--workdir must be a gs:// URL"),
        (["tpu", "--project=p", "--bucket=gs://b", "--accelerator_type=tpu8"], "unrecognized --accelerator_type"),
    ):
        r = subprocess.run(
            [sys.executable, os.path.join(REPO, "cloud", "launch.py"), *bad, "--dry_run"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert r.returncode != 0 and msg in r.stderr, (bad, r.stderr)


def test_image_commands_match_cloudbuild_config_and_dockerfile():
    (build,) = _dry_run("image", "--project=proj", "--accelerator=tpu")
    assert build[:3] == ["gcloud", "builds", "submit"] and build[-1] == "."
    subs = dict(
        kv.split("=", 1)
        for kv in next(a for a in build if a.startswith("--substitutions="))[len("--substitutions=") :].split(",")
    )
    assert subs == {"_IMAGE": IMAGE + ":tpu", "_ACCELERATOR": "tpu"}
    with open(os.path.join(REPO, "cloud", "cloudbuild.yaml")) as f:
        cfg = yaml.safe_load(f)
    used = set(re.findall(r"\$\{(_[A-Z_]+)\}", str(cfg["steps"]) + str(cfg["images"])))
    assert used == set(subs)  # every substitution the config uses is passed, and nothing else
    assert cfg["steps"][0]["args"][:3] == ["build", "--build-arg", "ACCELERATOR=${_ACCELERATOR}"]

    create, build, auth, push = _dry_run(
        "image", "--project=proj", "--builder=docker", "--create_repository", "--accelerator=cuda12"
    )
    assert create[:4] == ["gcloud", "artifacts", "repositories", "create"]
    assert build == ["docker", "build", "--build-arg", "ACCELERATOR=cuda12", "-t", IMAGE + ":cuda12", "."]
    assert auth[-2:] == ["us-central1-docker.pkg.dev", "--quiet"] and push == ["docker", "push", IMAGE + ":cuda12"]
    dockerfile = open(os.path.join(REPO, "Dockerfile")).read()
    assert re.search(r"^ARG ACCELERATOR=cpu$", dockerfile, re.M)
    for accel in launch.ACCELERATORS:
        assert accel in dockerfile


def test_build_image_first_builds_the_image_the_job_then_uses():
    build, job = _dry_run("dataflow", "--project=proj", "--bucket=gs://b", "--build_image")
    assert "--substitutions=_IMAGE=" + IMAGE + ":cpu,_ACCELERATOR=cpu" in build
    assert f"--sdk_container_image={IMAGE}:cpu" in job
    steps = _dry_run(
        "tpu",
        "--project=proj",
        "--bucket=gs://b",
        "--build_image",
        "--builder=docker",
        "--image=europe-docker.pkg.dev/p/r/img:v7",
    )
    assert steps[0] == [
        "docker",
        "build",
        "--build-arg",
        "ACCELERATOR=tpu",
        "-t",
        "europe-docker.pkg.dev/p/r/img:v7",
        ".",
    ]
    assert steps[1][-2:] == ["europe-docker.pkg.dev", "--quiet"]  # Docker is authorized for that registry
    assert steps[2] == ["docker", "push", "europe-docker.pkg.dev/p/r/img:v7"]
    assert "sudo docker pull europe-docker.pkg.dev/p/r/img:v7" in _command_of(steps[-2])


def _train_args(script: str) -> list[str]:
    """The train_main.py flags inside a remote start script."""
    toks = shlex.split(script.split("train_main", 1)[1].split(" $DIST", 1)[0])
    return toks[1:] if toks and toks[0].endswith(".py") else toks


def test_tpu_v3_8_creates_installs_the_container_and_starts_the_reference_run():
    create, install, start = _dry_run("tpu", "--project=proj", "--bucket=gs://b", "--spot", "--", TRICKY)
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "set-v3-8"]
    for flag in (
        "--project=proj",
        "--zone=us-central1-a",
        "--accelerator-type=v3-8",
        "--version=tpu-ubuntu2204-base",
        "--spot",
    ):
        assert flag in create
    for ssh in (install, start):
        assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "set-v3-8"] and "--worker=all" in ssh
        _bash_syntax_ok(_command_of(ssh))
    assert f"sudo docker pull {IMAGE}:tpu" in _command_of(install)
    script = _command_of(start)
    assert f"--entrypoint=python {IMAGE}:tpu train_main.py " in script
    assert "--detach" in script and "sudo docker rm -f set-train" in script  # a rerun replaces the old container

    from train_main import build_parser  # the real train_main.py flags

    args = build_parser().parse_args(_train_args(script)[:-1])
    assert (args.config, args.data_dir, args.workdir, args.export_dir) == (
        "reference",
        "gs://b/data",
        "gs://b/runs/set-v3-8",
        "gs://b/export/set-v3-8",
    )
    assert _train_args(script)[-1] == TRICKY  # extra flags survive two levels of shell quoting


def test_tpu_pod_slice_reaches_every_worker_and_passes_multi_host_flags():
    assert [launch.hosts_in_slice(t) for t in ("v3-8", "v3-32", "v4-64", "v2-512", "v5litepod-8", "v5litepod-16")] == [
        1,
        4,
        8,
        64,
        1,
        4,
    ]
    delete, create, wheel, scp, install, start = _dry_run(
        "tpu",
        "--project=proj",
        "--bucket=gs://b",
        "--name=pod",
        "--install=pip",
        "--accelerator_type=v3-32",
        "--recreate",
        "--preemptible",
    )
    assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "pod"] and "--quiet" in delete
    assert "--accelerator-type=v3-32" in create and "--preemptible" in create and "--spot" not in create
    assert wheel == ["python", "-m", "pip", "wheel", "--no-deps", "-w", "dist", "."]
    assert scp[4:7] == ["scp", f"dist/{launch.wheel_name()}", "pod:~/"]
    for cmd in (scp, install, start):
        assert "--worker=all" in cmd
    for ssh in (install, start):
        _bash_syntax_ok(_command_of(ssh))
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        jax_pin = next(r for r in tomllib.load(f)["project"]["dependencies"] if r.startswith("jax=="))
    assert f"'jax[tpu]=={jax_pin[5:]}'" in _command_of(install)
    assert "python3.11 -m venv" in _command_of(install)
    script = _command_of(start)
    assert "~/set-venv/bin/python -m train_main --config=reference --data_dir=gs://b/data" in script
    # Detached (survives the ssh session), its pid recorded so that a rerun stops it before resuming.
    assert script.endswith("$DIST > ~/train.log 2>&1 < /dev/null & echo $! > ~/train.pid")
    assert 'kill "$(cat ~/train.pid)"' in script.split("nohup")[0]


@pytest.mark.parametrize(
    "endpoints,worker,expected",
    [
        ("t1k-w-0:0:10.164.0.2", "0", ""),
        (
            "t1k-w-0:0:10.164.0.2,t1k-w-1:1:10.164.0.3,t1k-w-2:2:10.164.0.4,t1k-w-3:3:10.164.0.5",
            "2",
            "--coordinator_address=10.164.0.2:8476 --num_processes=4 --process_id=2",
        ),
        ("host-a,host-b", "1", "--coordinator_address=host-a:8476 --num_processes=2 --process_id=1"),
    ],
)
def test_multi_host_flags_from_tpu_metadata(endpoints, worker, expected):
    # The shell logic the remote script runs after reading the metadata, run here on sample values
    # of both metadata formats.
    script = (
        f"set -euo pipefail; ENDPOINTS={shlex.quote(endpoints)}; WORKER_ID={worker}; "
        f'{launch.dist_from_endpoints()}; printf %s "$DIST"'
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == expected
    if expected:
        from train_main import build_parser

        args = build_parser().parse_args(expected.split())
        assert args.num_processes == int(expected.split("num_processes=")[1].split()[0])


def test_foreground_keeps_the_session_attached():
    *_, start = _dry_run("tpu", "--project=proj", "--bucket=gs://b", "--skip_create", "--foreground")
    script = _command_of(start)
    assert "--rm" in script and "--detach" not in script
    create_steps = [
        s for s in launch.steps_for(["tpu", "--project=p", "--bucket=gs://b", "--skip_create"]) if "create" in s.argv
    ]
    assert create_steps == []
