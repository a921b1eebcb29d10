import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*settotalmass.*")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
