import pytest
import torch

from adjinv.errors import AdjinvError
from adjinv.images.photos import HELDOUT, SPLITS, TRAIN, VALIDATION, photo, split_photos


def test_splits_are_disjoint_by_photo():
    assert not set(TRAIN) & set(VALIDATION)
    assert not set(TRAIN) & set(HELDOUT)
    assert not set(VALIDATION) & set(HELDOUT)


@pytest.mark.parametrize("split", list(SPLITS))
def test_split_loads_rgb_in_unit_range(split):
    photos = split_photos(split)
    assert list(photos) == list(SPLITS[split])
    for t in photos.values():
        assert t.shape[0] == 3 and t.dtype == torch.float32
        assert float(t.min()) >= 0 and float(t.max()) <= 1
        assert float(t.std()) > 0.01  # a real photo, not a blank


def test_greyscale_is_replicated_and_unknown_is_refused():
    g = photo("camera")
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    with pytest.raises(AdjinvError, match="unknown photo"):
        photo("lena")
    with pytest.raises(AdjinvError, match="unknown split"):
        split_photos("test")
