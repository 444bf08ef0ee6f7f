"""Settings the widgets remember between napari sessions (last model, device, tile size...).

A small JSON file in the user's config folder; ``NAPARI_SPOTDETECT_SETTINGS`` names another file (tests
point it at a temporary path so they never read or change the user's own settings). Only choices that do
not depend on the image are stored: axes and thresholds belong to the data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.io.spots_io import atomic_write_text

ENV_VAR = "NAPARI_SPOTDETECT_SETTINGS"


def settings_path() -> Path:
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    try:
        from platformdirs import user_config_dir

        base = Path(user_config_dir("napari-spotdetect", appauthor=False))
    except ImportError:  # platformdirs comes with napari; fall back for bare installs
        base = Path.home() / ".config" / "napari-spotdetect"
    return base / "settings.json"


def load_settings(section: str) -> dict:
    """The stored settings of one widget; {} when there are none or the file is unreadable."""
    try:
        data = json.loads(settings_path().read_text())
    except (OSError, ValueError):
        return {}
    value = data.get(section, {}) if isinstance(data, dict) else {}
    return value if isinstance(value, dict) else {}


def save_settings(section: str, values: dict) -> None:
    """Merge ``values`` into one widget's section; failures to write are ignored (settings are a comfort)."""
    path = settings_path()
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data.setdefault(section, {})
    if not isinstance(data[section], dict):
        data[section] = {}
    data[section].update(values)
    try:
        atomic_write_text(path, json.dumps(data, indent=2, default=str))
    except OSError:
        pass
