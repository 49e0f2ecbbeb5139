"""train_main.py on two processes (CPU, gloo collectives, 2 devices each) with jax.distributed:
it trains, checkpoints every host's data position, and resumes exactly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests._xla import cpu_devices_env
from trainer.train.metrics_writer import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_hosts(data_dir, model_dir, workdir, *extra):
    port = _free_port()
    env = cpu_devices_env(2)
    procs = []
    for pid in range(2):
        cmd = [
            sys.executable,
            os.path.join(REPO, "train_main.py"),
            f"--data_dir={data_dir}",
            f"--workdir={workdir}",
            f"--model={model_dir}",
            "--from_scratch=true",
            "--batch_size=8",
            "--train_steps=6",
            "--warmup_steps=2",
            "--learning_rate=1e-3",
            "--log_every=1",
            "--eval_every=0",
            "--checkpoint_every=1000",
            "--max_seq_length=32",
            "--bucket_lengths=16,32",
            "--no_progress",
            "--eval_max_examples=8",
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={pid}",
            *extra,
        ]
        procs.append(
            subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        )
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    return err


@pytest.mark.slow  # 5-8 min; tests/test_mesh.py keeps two processes in CI
def test_two_hosts_train_and_resume_exactly(tmp_path, sample_data_dir, tiny_bert_dir):
    straight = str(tmp_path / "straight")
    err = _run_two_hosts(sample_data_dir, tiny_bert_dir, straight)
    assert "global batch 8 = 2 host(s) x 4 = 4 device(s) x 2" in err
    resumed = str(tmp_path / "resumed")
    _run_two_hosts(sample_data_dir, tiny_bert_dir, resumed, "--stop_at_step=3")
    _run_two_hosts(sample_data_dir, tiny_bert_dir, resumed)
    a = {r["step"]: (r["loss"], r["corpus"]) for r in read_metrics(straight) if "loss" in r}
    b = {r["step"]: (r["loss"], r["corpus"]) for r in read_metrics(resumed) if "loss" in r}
    assert sorted(a) == sorted(b) == list(range(1, 7))
    np.testing.assert_array_equal([a[s][0] for s in a], [b[s][0] for s in a])
    assert [a[s][1] for s in a] == [b[s][1] for s in a]
    assert os.path.isfile(os.path.join(straight, "export", "model.safetensors"))  # written once, by host 0
