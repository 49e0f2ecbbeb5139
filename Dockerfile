# One image for both cloud halves of the project:
#  * Dataflow's custom worker container for beam_main.py. The base is Apache Beam's own Python 3.11
#    SDK image of the Beam version pinned in pyproject.toml: it carries the worker boot program
#    (/opt/apache/beam/boot, the ENTRYPOINT Dataflow starts), and a worker whose SDK differs from the
#    launcher's is refused. tests/test_dockerfile.py checks that the tag equals the pin.
#  * the trainer on a Cloud TPU VM or a GPU host:
#      docker run --privileged --net=host --entrypoint python IMAGE train_main.py --config=reference ...
#
# Build (see cloud/launch.py image):
#   docker build --build-arg ACCELERATOR=tpu -t REGION-docker.pkg.dev/PROJECT/REPO/sentence-embedding-training:tpu .
# ACCELERATOR: cpu (Dataflow; the jax wheel pyproject pins), tpu (adds libtpu), cuda12 (adds the
# CUDA 12 plugin and NVIDIA libraries). The accelerator step reuses the jax version that the
# requirements install resolved, so it never differs from pyproject.toml.
FROM apache/beam_python3.11_sdk:2.77.0

ARG ACCELERATOR=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The whole requirement set comes from pyproject.toml and nothing else, so the image and the project
# cannot drift apart: first its [project].dependencies (read from the file at build time; a layer
# that a source-only change does not invalidate), then the project itself without dependencies.
# The dev extra (torch, tests) is not installed.
COPY pyproject.toml /app/
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && JAX_VERSION="$(python -c 'from importlib.metadata import version; print(version("jax"))')" \
    && case "${ACCELERATOR}" in \
         cpu) ;; \
         tpu|cuda12) pip install --no-cache-dir "jax[${ACCELERATOR}]==${JAX_VERSION}" ;; \
         *) echo "unknown ACCELERATOR=${ACCELERATOR} (cpu|tpu|cuda12)" >&2; exit 1 ;; \
       esac

COPY . /app
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import apache_beam, jax, tensorflow, flax, pipeline, trainer; assert apache_beam.__version__ == '2.77.0', apache_beam.__version__"

# The Beam base image's ENTRYPOINT (/opt/apache/beam/boot) is kept: Dataflow starts it.
