"""Cloud launcher: build the image, run the Beam job on Dataflow, train on a Cloud TPU VM.

    python cloud/launch.py image    --project=P --accelerator=tpu                 [--dry_run]
    python cloud/launch.py dataflow --project=P --bucket=gs://B                   [--dry_run]
    python cloud/launch.py tpu      --project=P --bucket=gs://B --name=set-v3-8   [--dry_run]

`dataflow` and `tpu` take --build_image to run the `image` steps first (cpu / tpu image).

Each subcommand builds the exact `gcloud` / `docker` / `python` commands, prints them (one per line,
shell-quoted, ready to paste) and, unless --dry_run, runs them in order, stopping at the first
failure. Flags after `--` go verbatim to beam_main.py (dataflow) or train_main.py (tpu).

Standard library only, so it runs from any machine with the Google Cloud CLI (and, for `dataflow`,
the project's virtualenv: the Dataflow launcher is beam_main.py itself). See docs/full_scale.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_NAME = "sentence-embedding-training"
ACCELERATORS = ("cpu", "tpu", "cuda12")
CONTAINER_NAME = "set-train"  # the training container's name on every TPU worker
COORDINATOR_PORT = 8476  # jax.distributed's default port
METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/attributes"


@dataclass(frozen=True)
class Step:
    """One command: what it does (printed as a comment) and its argv."""

    title: str
    argv: list[str]


def _pyproject() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _pinned(name: str) -> str:
    for req in _pyproject()["project"]["dependencies"]:
        m = re.fullmatch(rf"{re.escape(name)}(\[[^\]]*\])?==([\w.]+)", req.replace(" ", ""))
        if m:
            return m.group(2)
    raise SystemExit(f"{name} is not pinned in pyproject.toml")


def _gs(value: str, flag: str) -> str:
    if not value.startswith("gs://"):
        raise SystemExit(f"{flag} must be a gs:// URL, got {value!r}")
    return value.rstrip("/")


def image_uri(project: str, region: str, repository: str, accelerator: str, tag: str | None = None) -> str:
    """The Artifact Registry URI; one tag per accelerator (cpu for Dataflow, tpu for training)."""
    return f"{region}-docker.pkg.dev/{project}/{repository}/{IMAGE_NAME}:{tag or accelerator}"


def _image_uri_from(args) -> str:
    return args.image or image_uri(args.project, args.region, args.repository, args.image_accelerator)


# ---------------------------------------------------------------------------------------------- image
def image_steps(args, accelerator: str, uri: str) -> list[Step]:
    steps = []
    if args.create_repository:
        steps.append(
            Step(
                "create the Artifact Registry repository (once)",
                [
                    "gcloud",
                    "artifacts",
                    "repositories",
                    "create",
                    args.repository,
                    f"--project={args.project}",
                    f"--location={args.region}",
                    "--repository-format=docker",
                ],
            )
        )
    if args.builder == "cloudbuild":
        # `gcloud builds submit --tag` cannot pass build arguments, hence the small config file.
        steps.append(
            Step(
                f"build and push {uri} on Cloud Build",
                [
                    "gcloud",
                    "builds",
                    "submit",
                    f"--project={args.project}",
                    "--config=cloud/cloudbuild.yaml",
                    f"--substitutions=_IMAGE={uri},_ACCELERATOR={accelerator}",
                    ".",
                ],
            )
        )
    else:
        steps.append(
            Step(
                f"build {uri} with the local Docker engine",
                ["docker", "build", "--build-arg", f"ACCELERATOR={accelerator}", "-t", uri, "."],
            )
        )
        steps.append(
            Step(
                "authorize Docker for Artifact Registry (once)",
                ["gcloud", "auth", "configure-docker", uri.split("/", 1)[0], "--quiet"],
            )
        )
        steps.append(Step("push it", ["docker", "push", uri]))
    return steps


# ------------------------------------------------------------------------------------------- dataflow
def dataflow_steps(args, extra: list[str]) -> list[Step]:
    bucket = _gs(args.bucket, "--bucket")
    staging = _gs(args.staging_location or f"{bucket}/dataflow/staging", "--staging_location")
    temp = _gs(args.temp_location or f"{bucket}/dataflow/temp", "--temp_location")
    input_root = _gs(args.input_root or f"{bucket}/corpora", "--input_root")
    output_dir = _gs(args.output_dir or f"{bucket}/data", "--output_dir")
    if args.max_num_workers < args.num_workers:
        raise SystemExit("--max_num_workers must be at least --num_workers")
    argv = [
        args.python,
        "beam_main.py",
        # ours (pipeline/options.py)
        f"--data_config={args.data_config}",
        f"--input_root={input_root}",
        f"--output_dir={output_dir}",
        f"--tokenizer={args.tokenizer}",
        f"--max_seq_length={args.max_seq_length}",
        # Beam / Dataflow
        "--runner=DataflowRunner",
        f"--project={args.project}",
        f"--region={args.region}",
        f"--job_name={args.job_name}",
        f"--staging_location={staging}",
        f"--temp_location={temp}",
        f"--sdk_container_image={_image_uri_from(args)}",
        # The SDK is already in the container: do not stage a tarball of it.
        "--sdk_location=container",
        "--experiments=use_runner_v2",
        f"--machine_type={args.machine_type}",
        f"--num_workers={args.num_workers}",
        f"--max_num_workers={args.max_num_workers}",
        "--autoscaling_algorithm=THROUGHPUT_BASED",
        f"--disk_size_gb={args.disk_size_gb}",
    ]
    if args.service_account_email:
        argv.append(f"--service_account_email={args.service_account_email}")
    return [
        Step(
            "submit the Beam job to Dataflow (run from the repository root, in the project's virtualenv)", argv + extra
        )
    ]


# ------------------------------------------------------------------------------------------------ tpu
def hosts_in_slice(accelerator_type: str) -> int:
    """Hosts (TPU VM workers) of a slice. v2/v3/v4/v5p count TensorCores, 8 per host; v5e/v6e count
    chips, 8 on the single-host shapes and 4 per host on the multi-host ones."""
    m = re.fullmatch(r"(v\d+[a-z]*(?:litepod)?)-(\d+)", accelerator_type)
    if not m:
        raise SystemExit(f"unrecognized --accelerator_type {accelerator_type!r} (e.g. v3-8, v3-32, v4-64)")
    family, n = m.group(1), int(m.group(2))
    if family in ("v2", "v3", "v4", "v5p"):
        return max(1, n // 8)
    return 1 if n <= 8 else n // 4


def train_argv(args, extra: list[str], python: str) -> list[str]:
    """train_main.py with the reference preset, reading and writing gs:// only."""
    bucket = _gs(args.bucket, "--bucket")
    argv = [
        python,
        "train_main.py",
        f"--config={args.config}",
        f"--data_dir={_gs(args.data_dir or bucket + '/data', '--data_dir')}",
        f"--workdir={_gs(args.workdir or f'{bucket}/runs/{args.name}', '--workdir')}",
        f"--export_dir={_gs(args.export_dir or f'{bucket}/export/{args.name}', '--export_dir')}",
        "--no_progress",
    ]
    if args.sts_dev:
        argv.append(f"--sts_dev={args.sts_dev}")
    return argv + extra


def dist_from_endpoints() -> str:
    """Shell lines: $WORKER_ID and $ENDPOINTS (TPU VM metadata) -> $DIST, train_main's multi-host
    flags; empty on a single host. The worker number is the process id and the first endpoint the
    coordinator. Endpoints are `name:id:ip` (older VMs) or plain host names: the last field is the
    address."""
    return "; ".join(
        [
            "COORDINATOR=$(echo \"$ENDPOINTS\" | cut -d, -f1 | awk -F: '{print $NF}')",
            "NUM_HOSTS=$(echo \"$ENDPOINTS\" | tr , '\\n' | grep -c .)",
            "DIST=",
            'if [ "$NUM_HOSTS" -gt 1 ]; then DIST="--coordinator_address=$COORDINATOR:'
            f'{COORDINATOR_PORT} --num_processes=$NUM_HOSTS --process_id=$WORKER_ID"; fi',
        ]
    )


def _distributed_prelude() -> str:
    """Reads this worker's metadata, then sets $DIST (every worker reads its own, so one command
    serves all workers)."""
    curl = f"curl -sf -H Metadata-Flavor:Google {METADATA}"
    return "; ".join(
        [
            f"WORKER_ID=$({curl}/agent-worker-number)",
            f"ENDPOINTS=$({curl}/worker-network-endpoints)",
            dist_from_endpoints(),
        ]
    )


def tpu_remote_commands(args, extra: list[str]) -> tuple[str, str]:
    """(install script, start script) to run on every worker through `tpu-vm ssh --command`."""
    if args.install == "container":
        uri = _image_uri_from(args)
        registry = uri.split("/", 1)[0]
        install = "; ".join(
            [
                "set -euo pipefail",
                # root's Docker uses the VM's service account through gcloud's credential helper.
                f"sudo gcloud auth configure-docker {shlex.quote(registry)} --quiet",
                f"sudo docker pull {shlex.quote(uri)}",
            ]
        )
        # Detached (the default) keeps the stopped container, and so its logs, until the next start.
        run = ["sudo", "docker", "run", "--privileged", "--net=host", f"--name={CONTAINER_NAME}"]
        run.append("--rm" if args.foreground else "--detach")
        run += ["--entrypoint=python", uri]
        train = shlex.join(run + train_argv(args, extra, python="")[1:])
        start = "; ".join(
            [
                "set -euo pipefail",
                _distributed_prelude(),
                # A rerun (resume) replaces a container left from an earlier start.
                f"sudo docker rm -f {CONTAINER_NAME} >/dev/null 2>&1 || true",
                f"{train} $DIST",
            ]
        )
        return install, start
    # pip: the TPU VM images ship Python 3.10 while the project needs 3.11, hence the venv from
    # deadsnakes; the project arrives as the wheel that the `tpu` subcommand copies over.
    wheel = wheel_name()
    venv = "~/set-venv"
    install = "; ".join(
        [
            "set -euo pipefail",
            "sudo add-apt-repository -y ppa:deadsnakes/ppa",
            "sudo apt-get update -q",
            "sudo apt-get install -y -q python3.11 python3.11-venv",
            f"python3.11 -m venv {venv}",
            f"{venv}/bin/pip install -q --upgrade pip",
            f"{venv}/bin/pip install -q ~/{shlex.quote(wheel)} {shlex.quote('jax[tpu]==' + _pinned('jax'))}",
        ]
    )
    # train_main.py is installed as a top-level module of the wheel. (The venv path stays unquoted
    # for the remote shell's ~ expansion; it contains nothing else to quote.)
    train = f"{venv}/bin/python -m train_main {shlex.join(train_argv(args, extra, python='python')[2:])} $DIST"
    # A rerun (resume) first stops the trainer an earlier start left running, by its recorded pid.
    stop_old = 'if [ -f ~/train.pid ]; then kill "$(cat ~/train.pid)" 2>/dev/null || true; rm -f ~/train.pid; fi'
    if args.foreground:
        run = train
    else:
        run = f"nohup {train} > ~/train.log 2>&1 < /dev/null & echo $! > ~/train.pid"
    return install, "; ".join(["set -euo pipefail", _distributed_prelude(), stop_old, run])


def wheel_name() -> str:
    project = _pyproject()["project"]
    return f"{project['name'].replace('-', '_')}-{project['version']}-py3-none-any.whl"


def tpu_steps(args, extra: list[str]) -> list[Step]:
    where = [f"--project={args.project}", f"--zone={args.zone}"]
    steps = []
    if args.recreate:
        steps.append(
            Step(
                "delete the old (for example preempted) TPU VM; the run state is in gs://",
                ["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, *where, "--quiet"],
            )
        )
    if not args.skip_create:
        create = [
            "gcloud",
            "compute",
            "tpus",
            "tpu-vm",
            "create",
            args.name,
            *where,
            f"--accelerator-type={args.accelerator_type}",
            f"--version={args.runtime_version}",
        ]
        if args.spot:
            create.append("--spot")
        elif args.preemptible:
            create.append("--preemptible")
        if args.service_account:
            create += [f"--service-account={args.service_account}", "--scopes=cloud-platform"]
        steps.append(
            Step(
                f"create the TPU VM ({args.accelerator_type}, {hosts_in_slice(args.accelerator_type)} host(s))", create
            )
        )
    # --worker=all: one command reaches every host of a pod slice (and the single host of a v3-8).
    ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, *where, "--worker=all"]
    install, start = tpu_remote_commands(args, extra)
    if args.install == "pip":
        wheel = wheel_name()
        steps.append(
            Step("build the project's wheel", [args.python, "-m", "pip", "wheel", "--no-deps", "-w", "dist", "."])
        )
        steps.append(
            Step(
                "copy it to every worker",
                [
                    "gcloud",
                    "compute",
                    "tpus",
                    "tpu-vm",
                    "scp",
                    f"dist/{wheel}",
                    f"{args.name}:~/",
                    *where,
                    "--worker=all",
                ],
            )
        )
    steps.append(Step(f"install on every worker ({args.install})", [*ssh, f"--command={install}"]))
    steps.append(
        Step(
            "start train_main.py on every worker (rerun this step, or the whole command, to "
            "resume from the last checkpoint)",
            [*ssh, f"--command={start}"],
        )
    )
    return steps


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python cloud/launch.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, region=True):
        sp.add_argument("--project", required=True, help="Google Cloud project id")
        if region:
            sp.add_argument("--region", default="us-central1", help="Dataflow / Artifact Registry region")
        sp.add_argument(
            "--repository",
            default="sentence-embedding",
            help="Artifact Registry Docker repository (default sentence-embedding)",
        )
        sp.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
        sp.add_argument("--python", default="python", help="local interpreter for beam_main.py / pip wheel")
        sp.add_argument(
            "--builder",
            choices=("cloudbuild", "docker"),
            default="cloudbuild",
            help="how images are built: Cloud Build, or the local Docker engine + push",
        )
        sp.add_argument(
            "--create_repository",
            action="store_true",
            help="also create the Artifact Registry repository (once per project)",
        )
        if sp.prog.split()[-1] != "image":
            sp.add_argument(
                "--build_image",
                action="store_true",
                help="build and push the image first (the `image` subcommand's steps)",
            )

    im = sub.add_parser("image", help="build and push the container image")
    common(im)
    im.add_argument(
        "--accelerator",
        choices=ACCELERATORS,
        default="cpu",
        help="cpu: Dataflow workers; tpu: Cloud TPU VMs; cuda12: GPU hosts",
    )
    im.add_argument("--tag", default=None, help="image tag (default: the accelerator name)")

    df = sub.add_parser("dataflow", help="run beam_main.py on Dataflow")
    common(df)
    df.add_argument("--bucket", required=True, help="gs://B: corpora in B/corpora, output B/data, staging, temp")
    df.add_argument("--image", default=None, help="worker image (default: the cpu tag of `image`)")
    df.add_argument("--data_config", default="data_config.json", help="local or gs:// data_config.json")
    df.add_argument("--input_root", default=None, help="default <bucket>/corpora")
    df.add_argument("--output_dir", default=None, help="default <bucket>/data")
    df.add_argument(
        "--tokenizer",
        default="FacebookAI/roberta-large",
        help="the trained model's tokenizer (hub name or gs:// dir), loaded by the launcher",
    )
    df.add_argument("--max_seq_length", type=int, default=128)
    df.add_argument("--staging_location", default=None, help="default <bucket>/dataflow/staging")
    df.add_argument("--temp_location", default=None, help="default <bucket>/dataflow/temp")
    df.add_argument("--job_name", default="sentence-embedding-preprocess")
    df.add_argument("--machine_type", default="n2-standard-8", help="worker machine type")
    df.add_argument("--num_workers", type=int, default=10, help="initial workers")
    df.add_argument("--max_num_workers", type=int, default=100, help="autoscaling upper limit")
    df.add_argument("--disk_size_gb", type=int, default=50, help="per-worker boot disk")
    df.add_argument("--service_account_email", default=None, help="worker service account")

    tp = sub.add_parser("tpu", help="create a Cloud TPU VM and start train_main.py on every worker")
    common(tp)
    tp.add_argument(
        "--bucket", required=True, help="gs://B: data in B/data, run in B/runs/NAME, export in B/export/NAME"
    )
    tp.add_argument("--name", default="set-v3-8", help="TPU VM name")
    tp.add_argument("--zone", default="us-central1-a")
    tp.add_argument("--accelerator_type", default="v3-8", help="v3-8, or a pod slice such as v3-32")
    tp.add_argument("--runtime_version", default="tpu-ubuntu2204-base", help="TPU VM software version")
    pre = tp.add_mutually_exclusive_group()
    pre.add_argument("--spot", action="store_true", help="Spot VM: much cheaper, can be preempted")
    pre.add_argument("--preemptible", action="store_true", help="preemptible VM (older form of --spot)")
    tp.add_argument("--service_account", default=None, help="VM service account (needs read/write on the bucket)")
    tp.add_argument(
        "--install",
        choices=("container", "pip"),
        default="container",
        help="container: pull the tpu image; pip: install the project's wheel + jax[tpu] in a venv",
    )
    tp.add_argument("--image", default=None, help="image for --install=container (default: the tpu tag of `image`)")
    tp.add_argument("--config", default="reference", help="train_main.py preset")
    tp.add_argument("--data_dir", default=None, help="default <bucket>/data")
    tp.add_argument("--workdir", default=None, help="default <bucket>/runs/<name>")
    tp.add_argument("--export_dir", default=None, help="default <bucket>/export/<name>")
    tp.add_argument("--sts_dev", default=None, help="gs:// path of the STS benchmark dev file, for evaluation")
    tp.add_argument("--skip_create", action="store_true", help="the VM exists: install and start only")
    tp.add_argument("--recreate", action="store_true", help="delete the VM first (after a preemption)")
    tp.add_argument(
        "--foreground",
        action="store_true",
        help="keep the ssh session attached to training (default: detached, logs on the VM)",
    )
    return p


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our flags, and the verbatim ones after `--`."""
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    args = build_parser().parse_args(argv)
    args.image_accelerator = "tpu" if args.command == "tpu" else "cpu"
    return args, extra


def steps_for(argv: list[str]) -> list[Step]:
    args, extra = parse(argv)
    if args.command == "image":
        return image_steps(
            args, args.accelerator, image_uri(args.project, args.region, args.repository, args.accelerator, args.tag)
        )
    build = image_steps(args, args.image_accelerator, _image_uri_from(args)) if args.build_image else []
    if args.command == "dataflow":
        return build + dataflow_steps(args, extra)
    return build + tpu_steps(args, extra)


def render(steps: list[Step]) -> str:
    return "\n".join(f"# {s.title}\n{shlex.join(s.argv)}" for s in steps) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, _ = parse(argv)
    steps = steps_for(argv)
    sys.stdout.write(render(steps))
    sys.stdout.flush()
    if args.dry_run:
        return 0
    for s in steps:
        print(f"==> {s.title}", file=sys.stderr)
        rc = subprocess.run(s.argv, cwd=REPO).returncode
        if rc != 0:
            print(f"failed (exit {rc}): {shlex.join(s.argv)}", file=sys.stderr)
            return rc
    if args.command == "tpu" and not args.foreground:
        where = f"--project={args.project} --zone={args.zone}"
        logs = f"sudo docker logs -f {CONTAINER_NAME}" if args.install == "container" else "tail -f ~/train.log"
        print(
            f"training started; logs of worker 0: gcloud compute tpus tpu-vm ssh {args.name} {where} "
            f"--worker=0 --command={shlex.quote(logs)}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
