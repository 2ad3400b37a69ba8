"""Opacus' ModuleValidator finds nothing to fix in any size or ablation; only supported layers
hold parameters."""
import pytest
from opacus.validators import ModuleValidator
from torch import nn

import mpdrm

ABLATIONS = [dict(), dict(use_mmp=False), dict(use_mpfn=False), dict(use_rarm=False),
             dict(use_orthogonality=False), dict(num_subjects=0),
             dict(use_mmp=False, use_mpfn=False, use_rarm=False), dict(task="classification", num_classes=3)]
SUPPORTED = (nn.Conv3d, nn.Linear, nn.GroupNorm, nn.LayerNorm, nn.Embedding)


@pytest.mark.parametrize("size", ["tiny", "base", "paper"])
@pytest.mark.parametrize("ablation", range(len(ABLATIONS)))
def test_module_validator_clean(size, ablation):
    model = mpdrm.build_model(size, **{"num_subjects": 4, **ABLATIONS[ablation]})
    assert ModuleValidator.validate(model, strict=False) == []
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            assert isinstance(module, SUPPORTED), f"{name}: {type(module).__name__} holds parameters"
        assert not isinstance(module, nn.modules.batchnorm._BatchNorm), name
    assert list(model.buffers()) == []
