"""Interpretable classifiers on the feature table (SCENMED §8): L2 logistic regression, linear SVM, random forest.

Fitting uses scikit-learn; the fitted model is then held as plain arrays (imputation medians, scaler,
coefficients, trees) and :meth:`FeatureClassifier.predict_proba` evaluates those arrays with numpy. So a
model saved as JSON and loaded back predicts exactly what the fitted one did, and nothing is unpickled.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .._errors import InputError

__all__ = ["FeatureClassifier", "MODEL_KINDS"]

MODEL_KINDS = ("logreg", "svm", "forest")
Kind = Literal["logreg", "svm", "forest"]

# SCENMED: random forest with 100 trees of depth <= 8, tuned by randomized search. The search space
# (ours; the paper gives none): features per split, leaf size, depth up to the paper's 8.
_FOREST_SPACE = {"max_features": ["sqrt", 0.1, 0.3], "min_samples_leaf": [1, 3, 10], "max_depth": [4, 6, 8]}
#: Inverse L2 strengths ``C="auto"`` chooses from (grouped inner folds): with ~150 correlated features
#: and a few dozen nuclei in a rare class, C = 1 overfits.
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _linear_proba(z: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Probabilities of a scikit-learn linear model from its coef_ (K or 1, F) and intercept_."""
    d = z @ coef.T + intercept
    if coef.shape[0] == 1:  # binary: one decision function, the positive class's logit
        from scipy.special import expit  # no overflow warning for large logits

        p1 = expit(d[:, 0])
        return np.column_stack([1.0 - p1, p1])
    return _softmax(d)


def _tree_arrays(est) -> dict[str, np.ndarray]:
    t = est.tree_
    value = t.value[:, 0, :].astype(np.float64)
    value /= np.maximum(value.sum(axis=1, keepdims=True), 1e-300)
    return {"left": t.children_left.astype(np.int32), "right": t.children_right.astype(np.int32),
            "feature": t.feature.astype(np.int32), "threshold": t.threshold.astype(np.float64),
            "value": value}


def _tree_proba(tree: dict[str, np.ndarray], x32: np.ndarray) -> np.ndarray:
    node = np.zeros(len(x32), dtype=np.int64)
    rows = np.arange(len(x32))
    while True:
        left = tree["left"][node]
        inner = left >= 0
        if not inner.any():
            return tree["value"][node]
        f = np.where(inner, tree["feature"][node], 0)
        go_left = x32[rows, f] <= tree["threshold"][node]
        node = np.where(inner, np.where(go_left, left, tree["right"][node]), node)


class FeatureClassifier:
    """A classifier of nuclei from their feature vectors, with imputation and standardization inside.

    Parameters
    ----------
    kind : {"logreg", "svm", "forest"}
        ``logreg``: L2 logistic regression (L-BFGS). ``svm``: linear SVM, probabilities by Platt scaling
        of its decision values on the training data. ``forest``: random forest, 100 trees, depth <= 8,
        settings by randomized search with grouped folds inside the training data.
    C : float or "auto"
        Inverse L2 strength (logreg, svm). ``"auto"``: the best of :data:`C_GRID` by balanced accuracy
        on grouped folds inside the training data (as the forest's search), recorded in
        ``params_["search"]``.
    class_weight : {"balanced", None}
        ``balanced`` weights each class by the inverse of its training frequency (SCENMED).
    n_search : int
        Forest settings tried by the randomized search.
    random_state : int

    Attributes
    ----------
    classes_ : (K,) ndarray of str
    n_features_in_ : int
    params_ : dict
        The fitted model as arrays (what :meth:`to_dict` saves).
    """

    def __init__(self, kind: Kind = "logreg", *, C: float | str = 1.0, class_weight: str | None = "balanced",
                 n_search: int = 8, random_state: int = 0) -> None:
        self.kind = kind
        self.C = C
        self.class_weight = class_weight
        self.n_search = n_search
        self.random_state = random_state

    # -- fitting -------------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: Sequence, *, groups: Sequence | None = None) -> "FeatureClassifier":
        """Fit on an (N, F) feature matrix (NaN allowed) and N class labels.

        Parameters
        ----------
        X : (N, F) array_like
        y : (N,) array_like of class names or integers
        groups : (N,) array_like, optional
            Validation groups (images); the forest's inner search keeps groups apart.
        """
        if self.kind not in MODEL_KINDS:
            raise InputError(f"unknown model kind {self.kind!r}; choose one of {', '.join(MODEL_KINDS)}")
        if isinstance(self.C, str) and self.C != "auto" or not isinstance(self.C, str) and not self.C > 0:
            raise InputError(f"C must be a positive number or 'auto', got {self.C!r}")
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).astype(str)
        if X.ndim != 2 or len(X) != len(y):
            raise InputError(f"need an (N, F) matrix and N labels, got {X.shape} and {y.shape}")
        classes, yi = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise InputError(f"need at least two classes to train, got {list(classes)}")
        with warnings.catch_warnings():  # a column with no finite value: imputed with 0 below
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(np.where(np.isfinite(X), X, np.nan), axis=0) if len(X) else np.zeros(X.shape[1])
        median = np.where(np.isfinite(median), median, 0.0)
        Xi = np.where(np.isfinite(X), X, median)
        mean = Xi.mean(axis=0)
        scale = Xi.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)  # constant columns carry nothing; keep them at 0
        Z = (Xi - mean) / scale
        p: dict[str, Any] = {"median": median, "mean": mean, "scale": scale}
        fit = {"logreg": self._fit_logreg, "svm": self._fit_svm, "forest": self._fit_forest}[self.kind]
        p.update(fit(Z, yi, None if groups is None else np.asarray(groups)))
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        self.params_ = p
        return self

    def _inner_folds(self, Z, yi, groups) -> list | None:
        """Up to 3 folds inside the training data, grouped when groups are given (None: too few)."""
        from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

        n_cls = np.bincount(yi)
        if groups is not None:
            k = min(3, min(len(np.unique(groups[yi == c])) for c in range(len(n_cls))))
            cv = StratifiedGroupKFold(k, shuffle=True, random_state=self.random_state) if k >= 2 else None
        else:
            k = min(3, int(n_cls.min()))
            cv = StratifiedKFold(k, shuffle=True, random_state=self.random_state) if k >= 2 else None
        return None if cv is None else list(cv.split(Z, yi, groups))

    def _choose_C(self, make, Z, yi, groups) -> tuple[float, dict]:
        """``self.C``, or with ``"auto"`` the grid value with the best inner balanced accuracy."""
        if self.C != "auto":
            return float(self.C), {}
        from sklearn.metrics import balanced_accuracy_score

        folds = self._inner_folds(Z, yi, groups)
        if folds is None:
            return 1.0, {"search": {"best": {"C": 1.0}, "score": None}}
        scores = {c: float(np.mean([balanced_accuracy_score(yi[te], make(c).fit(Z[tr], yi[tr]).predict(Z[te]))
                                    for tr, te in folds])) for c in C_GRID}
        best = max(C_GRID, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
        return best, {"search": {"best": {"C": best}, "score": scores[best],
                                 "scores": {str(c): v for c, v in scores.items()}}}

    def _fit_logreg(self, Z, yi, groups):
        from sklearn.linear_model import LogisticRegression

        def make(c):
            return LogisticRegression(C=c, solver="lbfgs", class_weight=self.class_weight, max_iter=5000)
        C, search = self._choose_C(make, Z, yi, groups)
        m = make(C).fit(Z, yi)
        return {"coef": m.coef_, "intercept": m.intercept_, **search}

    def _fit_svm(self, Z, yi, groups):
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        def make(c):
            return LinearSVC(C=c, class_weight=self.class_weight, max_iter=20000, random_state=self.random_state)
        C, search = self._choose_C(make, Z, yi, groups)
        m = make(C)
        m.fit(Z, yi)
        d = Z @ m.coef_.T + m.intercept_
        platt = LogisticRegression(C=1e4, solver="lbfgs", class_weight=self.class_weight, max_iter=5000).fit(d, yi)
        return {"coef": m.coef_, "intercept": m.intercept_, "platt_coef": platt.coef_,
                "platt_intercept": platt.intercept_, **search}

    def _fit_forest(self, Z, yi, groups):
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.model_selection import ParameterSampler

        def forest(**kw):
            return RandomForestClassifier(n_estimators=100, class_weight=self.class_weight, n_jobs=1,
                                          random_state=self.random_state, **kw)

        best, best_score = {"max_depth": 8}, -np.inf
        folds = self._inner_folds(Z, yi, groups)
        if folds is not None and self.n_search > 1:
            from sklearn.metrics import balanced_accuracy_score

            for cand in ParameterSampler(_FOREST_SPACE, self.n_search, random_state=self.random_state):
                s = np.mean([balanced_accuracy_score(yi[te], forest(**cand).fit(Z[tr], yi[tr]).predict(Z[te]))
                             for tr, te in folds])
                if s > best_score:
                    best, best_score = cand, s
        m = forest(**best).fit(Z, yi)
        return {"trees": [_tree_arrays(e) for e in m.estimators_], "search": {"best": best, "score": best_score},
                "importance": m.feature_importances_}

    # -- prediction ----------------------------------------------------------------------------------
    def _z(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise InputError(f"the model takes {self.n_features_in_} features per nucleus, got shape {X.shape}")
        p = self.params_
        return (np.where(np.isfinite(X), X, p["median"]) - p["mean"]) / p["scale"]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, K) float64 class probabilities, columns in :attr:`classes_` order."""
        z = self._z(X)
        p = self.params_
        if self.kind == "logreg":
            return _linear_proba(z, p["coef"], p["intercept"])
        if self.kind == "svm":
            d = z @ p["coef"].T + p["intercept"]
            return _linear_proba(d, p["platt_coef"], p["platt_intercept"])
        # scikit-learn's trees compare float32 features with float64 thresholds: the same here
        z32 = z.astype(np.float32)
        return np.mean([_tree_proba(t, z32) for t in p["trees"]], axis=0)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(N,) predicted class names."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def feature_weights(self) -> np.ndarray:
        """(F,) how much each standardized feature drives the decision (|coef| summed over classes, or
        the forest's impurity importance)."""
        p = self.params_
        if self.kind == "forest":
            return np.asarray(p["importance"], dtype=np.float64)
        return np.abs(np.asarray(p["coef"])).sum(axis=0)

    # -- saving --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: settings, classes and every fitted array as nested lists."""
        def plain(v):
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, list):
                return [plain(x) for x in v]
            if isinstance(v, (np.floating, np.integer)):
                return v.item()
            return v

        return {"kind": self.kind, "settings": {"C": self.C, "class_weight": self.class_weight,
                                                "n_search": self.n_search, "random_state": self.random_state},
                "classes": [str(c) for c in self.classes_], "n_features": int(self.n_features_in_),
                "params": plain(self.params_)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureClassifier":
        """Rebuild a fitted classifier from :meth:`to_dict`'s output."""
        try:
            m = cls(d["kind"], **d["settings"])
            m.classes_ = np.asarray(d["classes"], dtype=str)
            m.n_features_in_ = int(d["n_features"])
            p = dict(d["params"])
            for k in ("median", "mean", "scale", "coef", "intercept", "platt_coef", "platt_intercept", "importance"):
                if k in p:
                    p[k] = np.asarray(p[k], dtype=np.float64)
            if "trees" in p:
                p["trees"] = [{"left": np.asarray(t["left"], np.int32), "right": np.asarray(t["right"], np.int32),
                               "feature": np.asarray(t["feature"], np.int32),
                               "threshold": np.asarray(t["threshold"], np.float64),
                               "value": np.asarray(t["value"], np.float64)} for t in p["trees"]]
            m.params_ = p
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"not a saved feature classifier ({type(e).__name__}: {e})") from None
        return m
