"""Keep ultralytics from reaching the network; call `offline_ultralytics()` before using it.

What ultralytics 8.4 does online, and how each is stopped here:

- At import it resolves public DNS names to decide whether it is online:
  YOLO_OFFLINE=1 makes `is_online()` return False without a lookup.
- It sends usage events unless the `sync` setting is False.
- It pip-installs missing packages (e.g. onnxslim for `simplify=True`):
  YOLO_AUTOINSTALL=0 turns that into a warning.
- `check_det_dataset` (every train and val run) and the PIL path of its
  plotting (`plot_images` for the train/val batch plots) call `check_font`,
  which sends an HTTP HEAD request for Arial.ttf to the ultralytics assets
  host even with YOLO_OFFLINE=1. We replace it with a lookup of a font that
  matplotlib ships. The tuner runs each iteration as a `yolo train`
  subprocess, which the replacement does not reach, so `install_local_fonts`
  puts that font where `check_font` looks first.
- The AMP check downloads a model, but only on CUDA; training here passes
  amp=False anyway.
- Weights given by name (`yolov8n.pt`) that do not exist locally are
  downloaded: the tools here load weights only from an existing path and
  build untrained models from the `<model>.yaml` configs bundled with
  ultralytics.
"""

from __future__ import annotations

import logging
import os
import shutil
from functools import cache
from pathlib import Path

logger = logging.getLogger(__name__)

# The fonts check_font requests: for ASCII class names, and for any others.
_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
_ENVIRONMENT = {"YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}


@cache
def local_font(font: str = "Arial.ttf") -> Path:
    """Return matplotlib's DejaVu Sans in place of any font ultralytics asks for."""
    from matplotlib import font_manager

    return Path(font_manager.findfont("DejaVu Sans", fallback_to_default=True))


def offline_ultralytics() -> None:
    """Set the offline environment and settings and patch the font download; idempotent.

    The environment variables take effect only if ultralytics has not been
    imported yet, so command-line tools call this first thing.
    """
    for name, value in _ENVIRONMENT.items():
        os.environ.setdefault(name, value)

    import ultralytics.data.utils
    import ultralytics.utils.checks
    import ultralytics.utils.plotting
    from ultralytics.utils import SETTINGS

    if SETTINGS.get("sync") is not False:
        SETTINGS.update(sync=False)
    # Each module imported the function by name, so each reference is replaced.
    for module in (ultralytics.utils.checks, ultralytics.data.utils, ultralytics.utils.plotting):
        module.check_font = local_font  # type: ignore[attr-defined]


def install_local_fonts() -> None:
    """Copy DejaVu Sans to ultralytics' config folder under the font names it requests.

    `check_font` returns a file in that folder before it tries a download, in
    subprocesses too. Existing files are kept.
    """
    from ultralytics.utils import USER_CONFIG_DIR

    for name in _FONT_NAMES:
        target = Path(USER_CONFIG_DIR) / name
        if not target.exists():
            shutil.copyfile(local_font(), target)
            logger.info(
                "copied %s to %s so that ultralytics does not download it", local_font(), target
            )
