"""Model names and sniffing in load_model."""

import pytest

from napari_spotdetect import load_model
from napari_spotdetect.core.errors import ModelFileError


def test_deepspot_name_without_internet_explains(monkeypatch):
    import napari_spotdetect.core.weights.deepspot_fetch as fetch

    def offline(*a, **k):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(fetch, "fetch_deepspot_weights", offline)
    with pytest.raises(ModelFileError, match="connect to the internet once"):
        load_model("deepspot")


def test_model_object_passes_through(tiny_piscis):
    assert load_model(tiny_piscis) is tiny_piscis
