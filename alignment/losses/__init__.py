"""Loss functions: tensors in, ``(loss, metrics)`` out; one algorithm per module."""

from .dpo import dpo_loss
from .ipo import ipo_loss
from .logps import sequence_logps, token_logps
from .reward import bradley_terry_loss

__all__ = [
    "bradley_terry_loss",
    "dpo_loss",
    "ipo_loss",
    "sequence_logps",
    "token_logps",
]
