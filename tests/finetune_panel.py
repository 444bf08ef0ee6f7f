"""What a user does in the Fine-tune panel, spelled once for the widget tests: choices made in its real
controls, Train clicked, the end of the run awaited (the panel's own sections hold the controls)."""

from __future__ import annotations

# waits end as soon as their condition holds; a loaded 2-core machine may need minutes, never a failure
WAIT_MS = 600_000


def choose_example(tune, image, points, row: int = 0) -> None:
    """Learn from layers: ``image`` with the spots of ``points`` in example row ``row`` ('+ Add an image' as needed)."""
    tune.examples.source.value = "layers"
    while len(tune.examples.rows) <= row:
        tune.examples.add_button.native.click()
    r = tune.examples.rows[row]
    r.image.value, r.points.value = image, points


def choose_start(tune, start: str, path=None) -> None:
    """Start from "default", "last" (the last detection's model), "file" (``path``) or a session model's key."""
    tune.settings.start.reset_choices()
    if path is not None:
        tune.settings.start_file.value = path
    tune.settings.start.value = start


def set_settings(tune, **values) -> None:
    """Type values into the settings controls, e.g. ``epochs=1, save_in=folder, model_name="tuned"``."""
    for name, value in values.items():
        getattr(tune.settings, name).value = value


def small_run(tune, folder, epochs: int = 2, steps: int = 3, batch: int = 2, name: str = "tuned") -> None:
    set_settings(tune, epochs=epochs, steps=steps, crop=64, batch=batch, save_in=folder, model_name=name)


def click_train(tune) -> None:
    assert tune.train_button.enabled, tune.status.value
    tune.train_button.native.click()
    assert tune.running


def train_and_wait(tune, qtbot) -> None:
    """Click Train, wait for the run to end, and check that it ended well."""
    click_train(tune)
    qtbot.waitUntil(lambda: not tune.running, timeout=WAIT_MS)
    assert tune.status.value == "Training finished.", tune.status.value
