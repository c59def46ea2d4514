"""Fault injection: kills, signals, concurrent runs, a full disk, hostile names and bad sizes.

Each test reproduces a failure found by trying ``run`` as a demanding user would (docs/reliability.md
lists the promises and which test holds each)."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from nucleoscope.cli import main
from nucleoscope.synth import nuclei_field

N_IMAGES = 8


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("in")
    for k in range(N_IMAGES):
        s = nuclei_field((384, 384), rng=100 + k)
        tifffile.imwrite(d / f"img{k}.tif", np.clip(s.image, 0, 65535).astype(np.uint16))
    return d


def _cmd(inputs: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nucleoscope", "run", str(inputs), "-o", str(out), "--method", "otsu", "-q",
            "--rois", *extra]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "o"
    subprocess.run(_cmd(inputs, out), check=True, capture_output=True)
    return out


def _same_results(a: Path, b: Path) -> None:
    """Labels bit-identical, nucleus tables equal, image tables equal but for the timings."""
    names = sorted(p.name for p in (a / "labels").glob("*.tif"))
    assert names == sorted(p.name for p in (b / "labels").glob("*.tif")) and len(names) == N_IMAGES
    for n in names:
        np.testing.assert_array_equal(tifffile.imread(a / "labels" / n), tifffile.imread(b / "labels" / n))
    pd.testing.assert_frame_equal(pd.read_parquet(a / "nuclei.parquet"), pd.read_parquet(b / "nuclei.parquet"))
    ia, ib = (pd.read_csv(p / "images.csv").drop(columns=["Seconds"]) for p in (a, b))
    pd.testing.assert_frame_equal(ia, ib)


def _done(out: Path) -> int:
    """Finished items: their records in .state/ (pathlib's glob also matches the hidden ``.~*`` temporary
    file of a record still being written, which is not finished)."""
    if not (out / ".state").is_dir():
        return 0
    return sum(1 for p in (out / ".state").glob("*.json") if not p.name.startswith("."))


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's wait is missing


def _start_and_kill(cmd: list[str], out: Path, after: int, sig: int) -> tuple[subprocess.Popen, list[int]]:
    """Start ``cmd``, wait until ``after`` images are finished, send ``sig``; returns the process and the
    worker pids it had."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    workers: list[int] = []
    while _done(out) < after and p.poll() is None and time.time() < deadline:
        workers = _children(p.pid) or workers
        time.sleep(0.02)
    workers = _children(p.pid) or workers
    if p.poll() is None:
        p.send_signal(sig)
    p.wait(timeout=60)
    return p, workers


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_kill_9_then_resume_equals_an_uninterrupted_run(inputs, reference, tmp_path, jobs):
    out = tmp_path / "o"
    rng = random.Random(int(jobs))
    for _ in range(2):  # killed twice at random points, then finished
        _start_and_kill(_cmd(inputs, out, "-j", jobs), out, rng.randint(1, N_IMAGES - 2), signal.SIGKILL)
    assert _done(out) < N_IMAGES
    done = subprocess.run(_cmd(inputs, out, "-j", jobs), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not list(out.glob("**/.~*")), "temporary files of the killed runs were left"
    assert not (out / ".nucleoscope.lock").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["n_resumed"] >= 1 and run["n_ok"] == N_IMAGES
    _same_results(reference, out)


def test_workers_exit_when_the_parent_is_killed(inputs, tmp_path):
    out = tmp_path / "o"
    p, workers = _start_and_kill(_cmd(inputs, out, "-j", "2"), out, 1, signal.SIGKILL)
    assert p.returncode == -signal.SIGKILL
    assert workers, "the run had no worker processes to check"
    deadline = time.time() + 10
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "workers outlived their killed parent"


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sigterm_stops_cleanly_and_the_rerun_resumes(inputs, reference, tmp_path, jobs):
    out = tmp_path / "o"
    p, workers = _start_and_kill(_cmd(inputs, out, "-j", jobs), out, 2, signal.SIGTERM)
    assert p.returncode == 128 + signal.SIGTERM, p.stderr.read()
    assert "run the same command again to resume" in p.stderr.read()
    time.sleep(0.5)
    assert not any(_alive(w) for w in workers)
    assert not (out / ".nucleoscope.lock").exists()
    done = subprocess.run(_cmd(inputs, out, "-j", jobs), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "run.json").read_text())["n_resumed"] >= 2
    _same_results(reference, out)


def test_a_second_run_on_the_same_folder_is_refused(inputs, tmp_path):
    out = tmp_path / "o"
    first = subprocess.Popen(_cmd(inputs, out, "-j", "1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (out / ".nucleoscope.lock").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    second = subprocess.run(_cmd(inputs, out, "--method", "classic"), capture_output=True, text=True)
    first.wait(timeout=120)
    assert first.returncode == 0
    assert second.returncode == 2 and "another nucleoscope run" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    # nothing of the second run's method got mixed in
    assert (pd.read_csv(out / "images.csv")["Method"] == "otsu").all()


def test_stale_lock_of_a_dead_process_is_taken_over(inputs, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".nucleoscope.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                       "started": "earlier"}))
    assert main(["run", str(inputs / "img0.tif"), "-o", str(out), "--method", "otsu", "-q"]) == 0
    assert not (out / ".nucleoscope.lock").exists()
    # a live one is not
    (out / ".nucleoscope.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    assert main(["run", str(inputs / "img0.tif"), "-o", str(out), "--method", "otsu", "-q"]) == 2
    (out / ".nucleoscope.lock").unlink()


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MiB tmpfs where one can be mounted (root on Linux), else None."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mnt)],
                        capture_output=True).returncode == 0 if os.geteuid() == 0 else False
    yield mnt if ok else None
    if ok:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_a_clear_message_and_leaves_no_partial_files(inputs, tmp_path, small_disk, capsys,
                                                                  monkeypatch):
    if small_disk is None:  # no tmpfs: the same failure from a patched writer
        from nucleoscope.io import _write

        calls = {"n": 0}
        orig = _write.write_labels

        def full(path, *a, **k):
            calls["n"] += 1
            if calls["n"] > 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return orig(path, *a, **k)

        monkeypatch.setattr("nucleoscope.io.write_labels", full)
        out = tmp_path / "o"
    else:
        out = small_disk / "o"
    code = main(["run", str(inputs), "-o", str(out), "--method", "otsu", "-q", "--features", "shape"])
    err = capsys.readouterr().err
    assert code == 1
    assert "No space left on device" in err and str(out) in err
    assert "Traceback" not in err
    # no partial file: every labels/*.tif present is complete, no temporaries left behind
    assert not list(out.glob("**/.~*"))
    for f in (out / "labels").glob("*.tif"):
        tifffile.imread(f)
    images = pd.read_csv(out / "images.csv") if (out / "images.csv").exists() else None
    if images is not None and not (images["Status"] == "failed").any():
        # every image's results fitted and the disk filled on the final tables: the message names each
        # one not written, and none is left half-written
        assert "some results could not be written" in err
        named = [n for n in ("nuclei.csv", "nuclei.parquet", "report.html") if str(out / n) in err]
        assert named and not any((out / n).exists() for n in named)


def test_output_folder_through_a_symlink_is_not_read_as_input(inputs, tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    for k in range(2):
        (src / f"img{k}.tif").write_bytes((inputs / f"img{k}.tif").read_bytes())
    link = tmp_path / "link"
    link.symlink_to(src)
    args = ["run", str(src), "-r", "-o", str(link), "--method", "otsu", "-q", "--features", "shape"]
    assert main(args) == 0
    assert main(args) == 0  # labels/ and overlays/ now exist inside the input folder, via the link
    images = pd.read_csv(src / "images.csv")
    assert sorted(images["ImageName"]) == ["img0", "img1"]


def test_jobs_are_capped_by_images_and_cores(inputs, tmp_path, caplog):
    out = tmp_path / "o"
    assert main(["run", str(inputs / "img0.tif"), str(inputs / "img1.tif"), "-o", str(out), "--method", "otsu",
                 "-q", "--features", "shape", "-j", "40"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["parameters"]["jobs"] == 40 and run["parameters"]["workers"] == min(2, os.cpu_count() or 1)
    assert "capped" in caplog.text


@pytest.mark.parametrize("bad", [["--crops", "-5"], ["--patches", "-1"], ["--crops", "100000"],
                                 ["--tile-size", "12"]])
def test_window_sizes_are_validated_up_front(inputs, tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as ei:
        main(["run", str(inputs / "img0.tif"), "-o", str(tmp_path / "o"), "-q", *bad])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # argparse's usage, then one line naming the option
    assert last.startswith(f"nucleoscope run: error: argument {bad[0]}") and "Traceback" not in err


@pytest.mark.parametrize("extra, message", [(["--scale", "1000"], "--scale 1000"),
                                            (["--diameter", "1e9"], "larger than this"),
                                            (["--scale", "0.001"], "nothing to segment")])
def test_impossible_sizes_are_named_not_out_of_memory(inputs, tmp_path, extra, message):
    out = tmp_path / "o"
    assert main(["run", str(inputs / "img0.tif"), "-o", str(out), "--method", "otsu", "-q", *extra]) == 1
    err = pd.read_csv(out / "images.csv")["Error"][0]
    assert message in err and "img0.tif" in err and "memory" not in err and "nan" not in err


def test_quiet_still_prints_failures_and_the_summary(inputs, tmp_path, capsys):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00 not a tiff")
    assert main(["run", str(inputs / "img0.tif"), str(bad), "-o", str(tmp_path / "o"), "--method", "otsu",
                 "-q"]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 images ok" in err and "failed:" in err and "broken.tif" in err
    assert "nucleoscope:" not in err  # no progress bar


def test_file_names_that_look_like_formulas_are_inert_in_csv(inputs, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    name = "=HYPERLINK(1)"
    (d / f"{name}.tif").write_bytes((inputs / "img0.tif").read_bytes())
    out = tmp_path / "o"
    assert main(["run", str(d), "-o", str(out), "--method", "otsu", "-q", "--features", "shape"]) == 0
    for table in ("images.csv", "nuclei.csv"):
        cells = pd.read_csv(out / table, dtype=str)["ImageName"]
        assert (cells == "'" + name).all()
    assert (pd.read_parquet(out / "nuclei.parquet")["ImageName"] == name).all()  # data keeps the name


def test_too_many_large_windows_are_refused_keeping_run_json(inputs, tmp_path, capsys, monkeypatch):
    # --crops 100000 used to crash after the batch (a 112 GiB allocation), losing run.json and the report
    from nucleoscope.pipeline import engine

    monkeypatch.setattr(engine, "MAX_WINDOW_BYTES", 1 << 20)
    out = tmp_path / "o"
    assert main(["run", str(inputs / "img0.tif"), "-o", str(out), "--method", "otsu", "-q", "--features", "shape",
                 "--crops", "256"]) == 1
    err = capsys.readouterr().err
    assert "img0" in err and "GiB" in err and "smaller size" in err and "Traceback" not in err
    assert (out / "run.json").exists() and (out / "report.html").exists() and not (out / "crops.h5").exists()
    assert json.loads((out / "run.json").read_text())["output_errors"]


def test_measure_checks_the_output_folder_before_the_work(inputs, tmp_path, capsys, monkeypatch):
    import nucleoscope.pipeline.measure as meas

    (tmp_path / "lab").mkdir()
    tifffile.imwrite(tmp_path / "lab" / "img0.tif", np.zeros((384, 384), np.uint16))
    (tmp_path / "file").write_text("x")

    def never(*a, **k):
        raise AssertionError("measured before checking -o")

    monkeypatch.setattr(meas.MeasureJob, "process", never)
    assert main(["measure", str(inputs / "img0.tif"), "--labels", str(tmp_path / "lab"), "-o",
                 str(tmp_path / "file" / "o")]) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_out_of_memory_message_names_the_real_way_out(inputs, tmp_path, monkeypatch):
    # "out of memory (nan MP); try a tiled method" named a method that did not exist
    import nucleoscope.pipeline.run as run_job

    def oom(*a, **k):
        raise MemoryError

    monkeypatch.setattr(run_job, "analyze", oom)
    out = tmp_path / "o"
    assert main(["run", str(inputs / "img0.tif"), "-o", str(out), "--method", "otsu", "-q"]) == 1
    err = pd.read_csv(out / "images.csv")["Error"][0]
    assert "out of memory (0.1 MP)" in err and "--tile-size" in err and "nan" not in err


def test_dense_small_nuclei_are_not_called_empty():
    # a 1500 px field of 5 px nuclei read as "no foreground above the noise": 0 nuclei, status ok
    pytest.importorskip("torch")
    from nucleoscope.segment.nuset.scale import EMPTY_SNR, _initial_diameter

    s = nuclei_field((1500, 1500), rng=1, diameter=(5.0, 6.0), coverage=0.35, max_nuclei=200000,
                     clump_fraction=0.0)
    c = _initial_diameter(s.image.astype(np.float32))
    assert c.snr >= EMPTY_SNR and 4.0 < c.diameter < 7.0


def test_nuclei_below_the_model_range_are_a_warning(tmp_path):
    pytest.importorskip("torch")
    from nucleoscope.segment import segment

    s = nuclei_field((256, 256), rng=3, diameter=(14.0, 16.0))
    _, det = segment(s.image.astype(np.float32), method="nuset", diameter=3.0)
    assert det.warnings and "below NuSeT's range" in det.warnings[0]
    _, ok = segment(s.image.astype(np.float32), method="nuset")
    assert ok.warnings == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_worker_is_killed_by_the_kernel_when_its_parent_dies():
    """The watchdog polls every 0.5 s; in that window a worker of a ``kill -9``-ed run went on writing and
    a run resumed at once kept its temporary file. The kernel's parent-death signal closes the window."""
    code = ("import ctypes, signal; from nucleoscope.pipeline.workers import worker_init; "
            "import os; worker_init(1, os.getppid()); v = ctypes.c_int(); "
            "ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0); print(v.value)")  # 2 = PR_GET_PDEATHSIG
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(got.stdout) == signal.SIGKILL
