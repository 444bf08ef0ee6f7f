"""Layer-metadata keys are spelled in one module only, so a reader and a writer of a key cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

from napari_spotdetect import layer_keys as K

SRC = Path(K.__file__).parent


def test_no_module_spells_a_layer_key_by_hand():
    keys = set(K.ALL)
    offenders = []
    for path in [*SRC.glob("*.py"), *(SRC / "widgets").glob("*.py")]:
        if path.name in ("layer_keys.py", "cli.py", "cli_train.py", "__main__.py"):
            continue  # "spotdetect" is also the command's name there
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for literal in re.findall(r"""["']([a-z_]+)["']""", line):
                if literal in keys:
                    offenders.append(f"{path.name}:{lineno}: {literal!r}")
    assert not offenders, "use napari_spotdetect.layer_keys instead of:\n" + "\n".join(offenders)


def test_keys_are_distinct_and_qc_layers_are_never_training_candidates():
    assert len(set(K.ALL)) == len(K.ALL)

    class Layer:
        def __init__(self, **meta):
            self.metadata = meta

    qc, truth, det = Layer(**{K.QC_MISSED: "x"}), Layer(**{K.TRUTH: {"image": "a"}}), Layer(**{K.PROVENANCE: {}})
    assert not K.is_training_candidate(qc) and K.is_training_candidate(truth) and K.is_training_candidate(det)
    assert K.is_detection(det) and not K.is_detection(truth) and not K.is_detection(qc)
