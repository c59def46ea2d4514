"""Conventions every score shares: the default IoU thresholds, threshold keys, and the empty-ratio rule.

A ratio whose denominator counts nothing takes a stated value (1 for precision / recall / F1 / AP / PQ:
"vacuous truth"; NaN or 0 where the score says so), so that an empty image segmented as empty scores
perfectly.
"""

from __future__ import annotations

#: IoU thresholds scored by default: 0.5, 0.55, ..., 0.95 (0.7, the NuSeT / STORM-paper threshold, is one).
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def threshold_key(thresh: float) -> float:
    """Normalise a threshold so it can key a dict exactly (``0.5 + 0.05 * 4`` -> ``0.7``)."""
    return round(float(thresh), 4)


def _ratio(num: float, den: float, empty: float = 1.0) -> float:
    return float(num) / float(den) if den else empty
