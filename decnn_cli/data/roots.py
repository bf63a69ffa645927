"""Where datasets live on disk: the --data-root option, else $DECNN_DATA_ROOT."""

from __future__ import annotations

import os
from pathlib import Path

from decnn_cli.config import DataConfig
from decnn_cli.errors import DecnnError

ENV_VAR = "DECNN_DATA_ROOT"


def resolve_root(cfg: DataConfig, folder_hint: str) -> Path:
    """The data root for ``cfg``; ``folder_hint`` says what the root must hold, for the error message."""
    root = cfg.root or (Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else None)
    if root is None and cfg.download:
        root = Path("data")  # --download without a root: fetch into ./data
    if root is None:
        raise DecnnError(
            f"dataset {cfg.name!r} needs a data root holding {folder_hint}: pass --data-root DIR "
            f"or set {ENV_VAR}" + (" (or add --download)" if cfg.name in ("mnist", "fashion") else "")
        )
    root = root.expanduser()
    if not root.is_dir() and not cfg.download:
        raise DecnnError(
            f"data root {root} does not exist; pass --data-root pointing at a folder holding {folder_hint}"
        )
    return root
