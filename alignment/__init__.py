"""Preference alignment and reasoning RL for language models.

Layers (data flows down): config -> trainers -> rollout / reward_models / losses -> models / data.
"""

__version__ = "0.1.0"
