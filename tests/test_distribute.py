"""tf.distribute: curvature, evidence, predictives and marglik training under a strategy equal those on one device.

Each case runs in fresh processes (tests/scripts/distributed_fit.py): logical devices and
multi-worker collectives must be set up before TensorFlow initialises.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent / "scripts" / "distributed_fit.py"


def _result(done_stdout: str) -> dict:
    return json.loads([line for line in done_stdout.splitlines() if line.startswith("{")][-1])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_mirrored_strategy_on_two_logical_cpus_matches_one_device():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "mirrored"], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = _result(done.stdout)
    assert result["replicas"] == 2
    structures = ("full", "diag", "kron", "last_layer_full", "last_layer_diag", "last_layer_kron", "gp", "gp_nystrom")
    assert all(value < 1e-10 for structure in structures for value in result[structure].values())
    trained = result["marglik_training"]  # float32 training steps, so to float32 round-off
    assert trained["strategy_used"] and trained["prior"] < 1e-4 and trained["evidence"] < 1e-4


def test_multi_worker_strategy_on_two_processes_matches_one_device():
    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(config)}
        processes.append(
            subprocess.Popen(
                [sys.executable, str(SCRIPT), "multiworker"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stdout[-2000:] + stderr[-3000:]
        result = _result(stdout)
        assert result["replicas"] == 2
        assert result["full"]["curvature"] < 1e-10 and result["kron"]["glm"] < 1e-10
