"""StopFlag, the Ctrl-C bridge: raises at once before training starts, otherwise only at the
next step boundary (where the loop can checkpoint consistently)."""
from __future__ import annotations

import pytest
import torch

from hyperfree.train import StepInfo, StopFlag


def test_stop_flag_raises_at_once_before_training_and_at_step_end_after() -> None:
    flag = StopFlag()
    with pytest.raises(KeyboardInterrupt):
        flag.request()  # nothing trained yet: nothing to checkpoint
    info = StepInfo(0, 0, 1, torch.tensor(0.0), {})
    flag.on_step_end(info)  # training now; no request pending
    flag.request()  # only sets the flag
    with pytest.raises(KeyboardInterrupt):
        flag.on_step_end(info)
