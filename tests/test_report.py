"""Report figures: drawn without pyplot's global state, so a user's matplotlib backend is left alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

matplotlib = pytest.importorskip("matplotlib")


@pytest.fixture
def svg_backend():
    """A non-Agg backend that exists without a display, as a notebook or napari session would have its own."""
    old = matplotlib.get_backend()
    matplotlib.use("svg")
    yield "svg"
    matplotlib.use(old)


def _nuclei() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"AreaShape_Area": rng.uniform(100, 400, 50), "Intensity_MeanIntensity": rng.uniform(0, 1, 50),
                         "QC_Flagged": np.zeros(50, bool)})


def _log(tmp_path):
    df = pd.DataFrame({"step": [10, 20, 30], "loss": [3.0, 2.0, 1.5], "bce": [0.6, 0.5, 0.4],
                       "boundary": [0.0, 0.0, 0.0], "val_f1_50": [0.1, np.nan, 0.5], "val_f1_70": [0.0, np.nan, 0.3]})
    path = tmp_path / "log.csv"
    df.to_csv(path, index=False)
    return path


def test_figures_leave_the_matplotlib_backend_unchanged(tmp_path, svg_backend):
    from nucleoscope.report import distributions_figure, training_curves_figure, write_report, write_training_curves

    assert matplotlib.get_backend().lower() == svg_backend
    fig = distributions_figure(_nuclei())
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel() == "area (px)"
    assert len(training_curves_figure(_log(tmp_path)).axes) == 2
    png = write_training_curves(_log(tmp_path), tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    images = pd.DataFrame({"ImageName": ["a"], "Path": ["a.tif"], "Status": ["ok"], "Error": [""], "Count": [50],
                           "Flagged": [0], "Megapixels": [0.26], "Seconds": [0.1]})
    html = write_report(tmp_path, images, _nuclei(), {"command": "test"}).read_text()
    assert "data:image/png;base64," in html  # the distributions were drawn and embedded
    assert matplotlib.get_backend().lower() == svg_backend


def test_training_curves_png_size_and_no_nuclei(tmp_path):
    import imagecodecs

    from nucleoscope.report import distributions_figure, write_training_curves

    assert distributions_figure(_nuclei().iloc[:0]) is None
    path = write_training_curves(_log(tmp_path), tmp_path / "sub" / "curves.png", dpi=50)
    assert imagecodecs.imread(str(path)).shape[:2] == (200, 500)  # 10 x 4 inches at 50 dpi
    assert not list((tmp_path / "sub").glob(".~*"))  # written atomically: no temporary file left behind
