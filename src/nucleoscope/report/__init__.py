"""Reports: the run report, one self-contained HTML page (figures and thumbnails embedded as data
URIs), and the figures (:mod:`nucleoscope.report.figures`), drawn without pyplot's global state."""

from __future__ import annotations

import base64
import html
import io as _io
import os
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from .figures import distributions_figure, training_curves_figure, write_training_curves

__all__ = ["MAX_THUMBNAILS", "distributions_figure", "training_curves_figure", "write_report",
           "write_training_curves"]

# A page with thousands of embedded thumbnails is unusable; the rest are linked from the table.
MAX_THUMBNAILS = 48

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.25em .6em;border-bottom:1px solid #eee;text-align:left}
th{background:#f5f5f5}.failed{color:#b00020}.ok{color:#087f23}.num{text-align:right}
.thumbs{display:flex;flex-wrap:wrap;gap:10px}.thumbs figure{margin:0;font-size:.8em;width:220px}
.thumbs img{width:220px;border:1px solid #ccc}.kpi{display:flex;gap:2em}.kpi div{font-size:1.4em}
.kpi span{display:block;font-size:.6em;color:#666}
"""


def _png_uri(fig) -> str:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _histograms(nuclei: pd.DataFrame) -> str:
    """Histograms of nucleus area and mean intensity, as an embedded PNG (empty string if no nuclei)."""
    fig = distributions_figure(nuclei)
    if fig is None:
        return ""
    return f'<img alt="distributions" src="{_png_uri(fig)}">'


def _thumbnail(path: Path, width: int = 220) -> str | None:
    """A small JPEG-free PNG data URI of an overlay, or None if it cannot be read."""
    try:
        import imagecodecs

        rgb = imagecodecs.imread(os.fspath(path))
    except Exception:  # a missing or unreadable overlay only loses its thumbnail
        return None
    step = max(1, int(np.ceil(rgb.shape[1] / width)))
    small = np.ascontiguousarray(rgb[::step, ::step])
    import imagecodecs

    return "data:image/png;base64," + base64.b64encode(imagecodecs.png_encode(small)).decode()


def _e(x) -> str:
    return html.escape(str(x))


def _href(name: str) -> str:
    """Relative link to ``overlays/<name>.png``, percent-encoded: names may hold ``#``, ``?``, ``%``, spaces."""
    return html.escape("overlays/" + quote(f"{name}.png"))


def write_report(out: str | os.PathLike, images: pd.DataFrame, nuclei: pd.DataFrame, run_info: dict) -> Path:
    """Write ``out/report.html`` for a finished run.

    Parameters
    ----------
    out : path
        The run's output folder (overlays are looked up in ``out/overlays``).
    images : pandas.DataFrame
        The images table (ImageName, Path, Status, Error, Count, Flagged, Megapixels, Seconds, ...).
    nuclei : pandas.DataFrame
        The nuclei table.
    run_info : dict
        The content of run.json.

    Returns
    -------
    pathlib.Path
        The report file.
    """
    from ..io import atomic_path

    out = Path(out)
    n_ok = int((images["Status"] == "ok").sum())
    n_fail = int(len(images) - n_ok)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>nucleoscope report</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>nucleoscope report</h1>",
             f"<p>{_e(run_info.get('command', ''))}<br>nucleoscope {_e(run_info.get('nucleoscope_version', ''))}"
             f" · method <b>{_e(run_info.get('parameters', {}).get('method', ''))}</b>"
             f" · {_e(run_info.get('started', ''))} → {_e(run_info.get('finished', ''))}</p>",
             "<div class='kpi'>"
             f"<div>{len(images)}<span>images</span></div><div class='ok'>{n_ok}<span>ok</span></div>"
             f"<div class='failed'>{n_fail}<span>failed</span></div><div>{len(nuclei)}<span>nuclei</span></div>"
             f"<div>{int(nuclei['QC_Flagged'].sum()) if 'QC_Flagged' in nuclei else 0}"
             "<span>QC-flagged</span></div></div>"]
    if n_fail:
        parts.append("<h2>Failures</h2><table><tr><th>image</th><th>error</th></tr>")
        for _, r in images[images["Status"] != "ok"].iterrows():
            parts.append(f"<tr><td>{_e(r['ImageName'])}</td><td class='failed'>{_e(r['Error'])}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Distributions</h2>")
    parts.append(_histograms(nuclei) or "<p>No nuclei found.</p>")
    qc_cols = [c for c in ("QC_Overexposed", "QC_NearEdge", "QC_TooLarge", "QC_TooSmall", "QC_Flagged")
               if c in nuclei]
    if qc_cols:
        parts.append("<h2>Quality control</h2><table><tr><th>flag</th><th class='num'>nuclei</th>"
                     "<th class='num'>%</th></tr>")
        for c in qc_cols:
            k = int(nuclei[c].sum())
            pct = 100.0 * k / len(nuclei) if len(nuclei) else 0.0
            parts.append(f"<tr><td>{_e(c)}</td><td class='num'>{k}</td><td class='num'>{pct:.1f}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Images</h2><table><tr><th>image</th><th>status</th><th class='num'>nuclei</th>"
                 "<th class='num'>flagged</th><th class='num'>MP</th><th class='num'>s</th></tr>")
    for _, r in images.iterrows():
        ok = r["Status"] == "ok"
        name = _e(r["ImageName"])
        has_overlay = ok and (out / "overlays" / f"{r['ImageName']}.png").exists()
        link = f"<a href='{_href(r['ImageName'])}'>{name}</a>" if has_overlay else name
        mp = f"{r['Megapixels']:.2f}" if pd.notna(r["Megapixels"]) else ""
        flagged = int(r["Flagged"]) if pd.notna(r.get("Flagged")) else ""  # measure runs no QC
        parts.append(f"<tr><td>{link}</td><td class='{'ok' if ok else 'failed'}'>{_e(r['Status'])}</td>"
                     f"<td class='num'>{int(r['Count'])}</td><td class='num'>{flagged}</td>"
                     f"<td class='num'>{mp}</td><td class='num'>{r['Seconds']:.2f}</td></tr>")
    parts.append("</table>")
    ok_names = [n for n in images.loc[images["Status"] == "ok", "ImageName"]
                if (out / "overlays" / f"{n}.png").exists()]  # none with --no-overlays
    if ok_names:
        parts.append("<h2>Overlays</h2><p>Cyan: nuclei; orange: QC-flagged. Click for full size.</p>"
                     "<div class='thumbs'>")
        for name in ok_names[:MAX_THUMBNAILS]:
            uri = _thumbnail(out / "overlays" / f"{name}.png")
            if uri:
                parts.append(f"<figure><a href='{_href(name)}'><img src='{uri}' alt='{_e(name)}'></a>"
                             f"<figcaption>{_e(name)}</figcaption></figure>")
        parts.append("</div>")
        if len(ok_names) > MAX_THUMBNAILS:
            parts.append(f"<p>{len(ok_names) - MAX_THUMBNAILS} more overlays are linked from the table.</p>")
    parts.append("</body></html>")
    target = out / "report.html"
    with atomic_path(target) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return target
