import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*settotalmass.*")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def as_off_the_cpu(monkeypatch):
    """Sparse targets pruned and gradients masked by tensor operations, as on a GPU."""
    import dstrl.sparse.engine as engine
    import dstrl.sparse.target as sparse_target

    monkeypatch.setattr(sparse_target, "compiled", lambda target, outside: False)
    monkeypatch.setattr(engine, "compiled", lambda weight, mask: False)
