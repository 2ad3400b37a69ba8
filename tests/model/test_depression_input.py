"""model.depression_input=motion: the depression branch reads only what moves in a clip."""
import pytest
import torch

import mpdrm
from mpdrm.model.depression import still_removed


def _model(**kw):
    torch.manual_seed(0)
    return mpdrm.build_model("tiny", num_subjects=4, image_size=32, frames=8, **kw)


def test_still_removed_leaves_each_pixels_changes_and_no_mean():
    x = torch.rand(3, 1, 8, 6, 6)
    y = still_removed(x)
    torch.testing.assert_close(y.mean(dim=2), torch.zeros(3, 1, 6, 6), rtol=0, atol=1e-6)
    torch.testing.assert_close(y.diff(dim=2), x.diff(dim=2), rtol=0, atol=1e-6)


def test_motion_input_hides_a_still_image_from_the_depression_branch_only():
    x = torch.rand(2, 1, 8, 32, 32)
    face = torch.rand(1, 1, 1, 32, 32)  # a different still appearance, same movements
    motion, frames = _model(depression_input="motion").eval(), _model().eval()
    with torch.no_grad():
        torch.testing.assert_close(motion.depression(x)[1], motion.depression(x + face)[1], rtol=0, atol=1e-5)
        assert not torch.allclose(frames.depression(x)[1], frames.depression(x + face)[1], atol=1e-3)
        # the personality branch still sees appearance
        assert not torch.allclose(motion.personality(x), motion.personality(x + face), atol=1e-3)
    assert set(motion.state_dict()) == set(frames.state_dict())  # same weights, same contract


def test_unknown_input_is_refused():
    with pytest.raises(ValueError, match="depression_input must be one of"):
        mpdrm.build_model("tiny", depression_input="optical_flow")
