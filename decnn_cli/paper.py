"""The numbers the paper reports, table by table, for side-by-side comparison in ``decnn reproduce``.

Each value names the measured quantity it corresponds to: the evaluation ``kind`` that produces it, the
``metric`` column of that evaluation's rows, and the row's ``dataset``, ``model`` and (for OOD tables)
``outlier``. Standard deviations are given where the paper gives them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperValue:
    table: str
    kind: str  # calibration | ood | attack | fairness | training
    metric: str
    dataset: str
    model: str
    value: float
    std: float | None = None
    outlier: str = ""


def _rows(table: str, kind: str, metric: str, datasets: list[str], rows: dict[str, list], outlier: str = ""):
    values = []
    for model, cells in rows.items():
        for dataset, cell in zip(datasets, cells, strict=True):
            if cell is None:
                continue
            value, std = cell if isinstance(cell, tuple) else (cell, None)
            values.append(PaperValue(table, kind, metric, dataset, model, value, std, outlier))
    return values


IMAGES = ["mnist", "fashion", "celeba"]

TABLE_1A = _rows(
    "1a",
    "calibration",
    "accuracy",
    IMAGES,
    {
        "standard": [(97.1, 0.11), (87.7, 0.19), (90.8, 0.1)],
        "decnn": [(97.8, 0.17), (88.8, 0.19), (90.8, 0.1)],
        "redecnn": [(97.5, 0.20), (88.1, 0.16), (90.8, 0.16)],
        "dropout": [(95.9, 0.13), (80.7, 0.24), (88.5, 0.12)],
        "mc-dropout": [(91.3, 0.14), (78.6, 0.23), (87.8, 0.19)],
        "bayesnn": [(96.3, 0.51), (87.0, 0.36), (88.2, 0.22)],
        "ensemble": [(97.6, 0.11), (88.4, 0.12), (90.9, 0.11)],
    },
)

TABLE_1B = _rows(
    "1b",
    "calibration",
    "misclass_auroc_vote_entropy",
    IMAGES,
    {
        "redecnn": [0.869, 0.795, 0.692],
        "mc-dropout": [0.878, 0.818, 0.657],
        "bayesnn": [0.537, 0.574, 0.587],
        "ensemble": [0.531, 0.559, 0.605],
    },
)

_TABLE_2 = {  # outlier -> dataset -> (ReDecNN, MC-Dropout, Ensemble)
    "mnist": {"fashion": (0.793, 0.864, 0.501), "celeba": (0.647, 0.548, 0.591)},
    "fashion": {"mnist": (0.812, 0.888, 0.534), "celeba": (0.641, 0.572, 0.599)},
    "celeba": {"mnist": (0.893, 0.943, 0.675), "fashion": (0.753, 0.793, 0.704)},
    "corrupt (mean)": {
        "mnist": (0.727, 0.785, 0.566),
        "fashion": (0.676, 0.691, 0.606),
        "celeba": (0.686, 0.569, 0.632),
    },
    "corrupt (stdev)": {
        "mnist": (0.075, 0.113, 0.087),
        "fashion": (0.072, 0.108, 0.106),
        "celeba": (0.038, 0.017, 0.016),
    },
}
TABLE_2 = [
    PaperValue("2", "ood", "auroc_vote_entropy", dataset, model, value, outlier=outlier)
    for outlier, by_dataset in _TABLE_2.items()
    for dataset, values in by_dataset.items()
    for model, value in zip(("redecnn", "mc-dropout", "ensemble"), values, strict=True)
] + [
    PaperValue("2", "attack", "auroc_vote_entropy", dataset, model, value, outlier="fgsm")
    for dataset, values in {"mnist": (0.787, 0.817, 0.540), "fashion": (0.711, 0.760, 0.589)}.items()
    for model, value in zip(("redecnn", "mc-dropout", "ensemble"), values, strict=True)
]

TABLE_3 = [
    PaperValue("3", "ood", "auroc_vote_entropy", "celeba", model, value, std, outlier=f"celeba-holdout:{attr}")
    for attr, values in {
        "Wearing_Hat": ((0.604, 0.01), (0.519, 0.01), (0.510, 0.01), (0.526, 0.01)),
        "Blond_Hair": ((0.593, 0.01), (0.502, 0.01), (0.508, 0.01), (0.509, 0.01)),
        "Bald": ((0.615, 0.01), (0.502, 0.01), (0.508, 0.01), (0.503, 0.01)),
    }.items()
    for model, (value, std) in zip(("redecnn", "mc-dropout", "bayesnn", "ensemble"), values, strict=True)
]

TABLE_4A = _rows(
    "4a",
    "calibration",
    "ece",
    IMAGES,
    {
        "standard": [(1.18, 0.10), (0.56, 0.14), (2.75, 0.13)],
        "redecnn": [(0.33, 0.05), (0.21, 0.03), (1.92, 0.13)],
        "dropout": [(0.63, 0.09), (0.48, 0.09), (2.51, 0.13)],
        "mc-dropout": [(0.41, 0.06), (0.13, 0.03), (2.99, 0.15)],
        "bayesnn": [(0.91, 0.20), (0.18, 0.03), (2.41, 0.19)],
        "ensemble": [(1.80, 0.12), (0.89, 0.07), (3.12, 0.12)],
    },
)

TABLE_4B = [
    value
    for depth, (acc, fashion, celeba) in {
        2: (97.7, 0.665, 0.752),
        4: (97.6, 0.788, 0.804),
        6: (97.7, 0.805, 0.868),
        8: (97.5, 0.812, 0.893),
    }.items()
    for value in (
        PaperValue("4b", "calibration", "accuracy", "mnist", f"redecnn (D={depth})", acc),
        PaperValue("4b", "ood", "auroc_vote_entropy", "mnist", f"redecnn (D={depth})", fashion, outlier="fashion"),
        PaperValue("4b", "ood", "auroc_vote_entropy", "mnist", f"redecnn (D={depth})", celeba, outlier="celeba"),
    )
]

_T5_MODELS = ("redecnn", "redecnn (Eq. 7: linear)", "redecnn (Eq. 7: resnet18)")
_TABLE_5 = {  # (kind, metric, outlier) -> dataset -> (none, linear, resnet)
    ("calibration", "accuracy", ""): {"mnist": (97.50, 97.17, 98.30), "celeba": (90.80, 89.76, 91.28)},
    ("calibration", "misclass_auroc_vote_entropy", ""): {
        "mnist": (0.869, 0.904, 0.742),
        "celeba": (0.692, 0.732, 0.615),
    },
    ("attack", "auroc_vote_entropy", "fgsm"): {"mnist": (0.787, 0.805, 0.729)},
    ("ood", "auroc_vote_entropy", "mnist"): {"celeba": (0.647, 0.693, 0.609)},
    ("ood", "auroc_vote_entropy", "fashion"): {"mnist": (0.812, 0.845, 0.650), "celeba": (0.641, 0.673, 0.585)},
    ("ood", "auroc_vote_entropy", "celeba"): {"mnist": (0.893, 0.928, 0.862)},
    ("ood", "auroc_vote_entropy", "corrupt (mean)"): {"mnist": (0.727, 0.790, 0.694), "celeba": (0.686, 0.708, 0.616)},
    ("calibration", "ece", ""): {"mnist": (0.334, 0.296, 0.385), "celeba": (1.927, 1.937, 3.002)},
}
TABLE_5 = [
    PaperValue("5", kind, metric, dataset, model, value, outlier=outlier)
    for (kind, metric, outlier), by_dataset in _TABLE_5.items()
    for dataset, values in by_dataset.items()
    for model, value in zip(_T5_MODELS, values, strict=True)
]

_TABLE_6 = {  # (kind, metric, outlier) -> (Eq. 7, direct), MNIST, linear m
    ("calibration", "accuracy", ""): (97.17, 96.72),
    ("calibration", "misclass_auroc_vote_entropy", ""): (0.904, 0.828),
    ("attack", "auroc_vote_entropy", "fgsm"): (0.805, 0.707),
    ("ood", "auroc_vote_entropy", "fashion"): (0.845, 0.699),
    ("ood", "auroc_vote_entropy", "celeba"): (0.928, 0.782),
    ("ood", "auroc_vote_entropy", "corrupt (mean)"): (0.790, 0.667),
    ("calibration", "ece", ""): (0.296, 0.280),
}
TABLE_6 = [
    PaperValue("6", kind, metric, "mnist", model, value, outlier=outlier)
    for (kind, metric, outlier), values in _TABLE_6.items()
    for model, value in zip(("redecnn (Eq. 7: linear)", "redecnn (direct: linear)"), values, strict=True)
]

_T7_MODELS = ("standard", "redecnn", "redecnn (Eq. 8)")
TABLE_7 = [
    PaperValue("7", "fairness", metric, "celeba", model, value)
    for metric, values in {
        "f1_group1": (0.338, 0.327, 0.461),
        "f1_group0": (0.438, 0.484, 0.501),
        "ap_group1": (19.4, 18.6, 27.2),
        "ap_group0": (23.9, 22.3, 28.9),
        "ece_group1": (4.76, 4.74, 3.80),
        "ece_group0": (3.56, 3.54, 3.28),
    }.items()
    for model, value in zip(_T7_MODELS, values, strict=True)
]

TABLE_8 = [
    PaperValue("8", "fairness", "probe_f1", "celeba", model, value)
    for model, value in zip(_T7_MODELS, (0.383, 0.371, 0.108), strict=True)
]

# model -> (accuracy, misclass, OOD, ECE) for audiomnist, fluent. The paper does not say which outliers its
# speech OOD column used; here each speech dataset is the other's outlier set.
_SPEECH = {
    "audiomnist": {
        "standard": (94.5,),
        "decnn": (93.8,),
        "redecnn": (93.4, 0.766, 0.705, 0.225),
        "mc-dropout": (82.1, 0.788, 0.745, 0.429),
        "bayesnn": (91.6, 0.545, 0.518, 1.039),
        "ensemble": (96.3, 0.529, 0.506, 1.103),
    },
    "fluent": {
        "standard": (42.4,),
        "decnn": (41.4,),
        "redecnn": (41.2, 0.642, 0.605, 0.523),
        "mc-dropout": (34.5, 0.629, 0.562, 0.515),
        "bayesnn": (40.3, 0.523, 0.500, 0.918),
        "ensemble": (44.1, 0.541, 0.522, 1.189),
    },
}
TABLE_9 = [
    PaperValue("9", kind, metric, dataset, model, value, outlier=outlier)
    for dataset, by_model in _SPEECH.items()
    for model, values in by_model.items()
    for (kind, metric, outlier), value in zip(
        (
            ("calibration", "accuracy", ""),
            ("calibration", "misclass_auroc_vote_entropy", ""),
            ("ood", "auroc_vote_entropy", "other speech"),
            ("calibration", "ece", ""),
        ),
        values,
        strict=False,
    )
]

TABLE_10 = _rows(
    "10",
    "training",
    "seconds_per_epoch",
    IMAGES,
    {
        "standard": [(13.6, 0.3), (13.5, 0.2), (82.6, 6.2)],
        "decnn": [(80.5, 6.8), (99.2, 9.6), (486.2, 12.9)],
        "redecnn": [(96.7, 9.7), (78.6, 6.6), (521.6, 9.2)],
        "dropout": [(13.9, 0.6), (14.0, 0.1), (79.5, 5.7)],
        "mc-dropout": [(13.9, 0.6), (14.0, 0.1), (79.5, 5.7)],
        "ensemble": [(109.6, 7.1), (132.6, 8.5), (659.4, 8.2)],
    },
)

PAPER: dict[str, list[PaperValue]] = {
    "1a": TABLE_1A,
    "1b": TABLE_1B,
    "2": TABLE_2,
    "3": TABLE_3,
    "4a": TABLE_4A,
    "4b": TABLE_4B,
    "5": TABLE_5,
    "6": TABLE_6,
    "7": TABLE_7,
    "8": TABLE_8,
    "9": TABLE_9,
    "10": TABLE_10,
}
