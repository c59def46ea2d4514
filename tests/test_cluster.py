"""`run --scheduler`: the batch engine's items as tasks on a Dask LocalCluster of 2 worker processes give
the same tables and labels as one process; a worker killed with SIGKILL mid-run loses nothing; resume
works across the two; a bad scheduler is a usage error before anything is written."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
import tifffile

pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")

from nucleoscope.cli import main  # noqa: E402
from nucleoscope.io import read_labels  # noqa: E402

from test_run import _field  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster") / "in"
    d.mkdir()
    for i in range(8):
        img, _ = _field(seed=i, shape=(700, 900))  # ~0.5 s of Otsu each: a kill lands mid-item
        tifffile.imwrite(d / f"f{i}.tif", np.tile(img[:160, :200], (4, 4))[:700, :900])
    return d


@pytest.fixture(scope="module")
def single(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out"
    assert main(["run", str(folder), "-o", str(out), "--method", "otsu", "-q"]) == 0
    return out


def _same(a, b):
    na = pd.read_parquet(a / "nuclei.parquet")
    nb = pd.read_parquet(b / "nuclei.parquet")
    pd.testing.assert_frame_equal(na, nb)
    for f in sorted((a / "labels").glob("*.tif")):
        np.testing.assert_array_equal(read_labels(f), read_labels(b / "labels" / f.name))
    ia = pd.read_csv(a / "images.csv")
    ib = pd.read_csv(b / "images.csv")
    assert ia["Count"].tolist() == ib["Count"].tolist() and (ib["Status"] == "ok").all()


def test_two_workers_give_the_single_process_result(folder, single, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(folder), "-o", str(out), "--method", "otsu", "-q", "--scheduler", "local:2"]) == 0
    _same(single, out)
    params = json.loads((out / "run.json").read_text())["parameters"]
    assert params["scheduler"] == "local:2" and params["workers"] == 2
    # resume: a local re-run finds everything done by the cluster
    assert main(["run", str(folder), "-o", str(out), "--method", "otsu", "-q"]) == 0
    assert json.loads((out / "run.json").read_text())["n_resumed"] == 8


def _kill_a_worker_mid_run(out, killed):
    """Wait for the first finished item, then SIGKILL one worker process (the nannies live in this
    process; each worker is a spawned child of it)."""
    me = psutil.Process()
    deadline = time.time() + 60
    while time.time() < deadline:
        if (out / ".state").exists() and list((out / ".state").glob("*.json")):
            try:  # processes come and go (the cluster's helpers): look again when one vanished
                workers = [c for c in me.children() if "spawn_main" in " ".join(c.cmdline())]
            except psutil.NoSuchProcess:
                continue
            if workers:
                os.kill(workers[0].pid, signal.SIGKILL)
                killed.append(workers[0].pid)
                return
        time.sleep(0.02)


def test_a_worker_killed_mid_run_loses_nothing(folder, single, tmp_path):
    out = tmp_path / "out"
    killed: list[int] = []
    t = threading.Thread(target=_kill_a_worker_mid_run, args=(out, killed), daemon=True)
    t.start()
    assert main(["run", str(folder), "-o", str(out), "--method", "otsu", "-q", "--scheduler", "local:2"]) == 0
    t.join(5)
    assert killed, "no worker was killed: the test did not exercise the failure"
    _same(single, out)


@pytest.mark.parametrize("bad", ["local:0", "local:x", "nowhere", "tcp://host"])
def test_bad_scheduler_is_a_usage_error_before_any_output(tmp_path, capsys, bad):
    img, _ = _field()
    tifffile.imwrite(tmp_path / "a.tif", img)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "a.tif"), "-o", str(out), "-q", "--scheduler", bad]) == 2
    assert "scheduler must be" in capsys.readouterr().err
    assert not out.exists()


def test_unreachable_scheduler_is_named(tmp_path, capsys, monkeypatch):
    from nucleoscope.pipeline import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    img, _ = _field()
    tifffile.imwrite(tmp_path / "a.tif", img)
    code = main(["run", str(tmp_path / "a.tif"), "-o", str(tmp_path / "out"), "--method", "otsu", "-q",
                 "--scheduler", "tcp://127.0.0.1:9"])
    assert code == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err
