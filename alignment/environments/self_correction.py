"""`self_correction`: after its first answer the model is asked to check and revise it;
the episode is the two attempts (Kumar et al. 2024, "Training Language Models to
Self-Correct via Reinforcement Learning", SCoRe).

Reward: the recipe's verifier on the second attempt (the episode's final turn) plus SCoRe's
stage-II shaping bonus α·(r(y2) − r(y1)) (their Eq. 4), which pays for turning a wrong first
answer into a right one and charges for the reverse, so that "answer twice the same" is not
the best policy. Logged per episode: `accuracy_t1`, `accuracy_t2`, and the two flips
`wrong_to_right` / `right_to_wrong` (their Δ(t1, t2) = accuracy_t2 − accuracy_t1).
"""

from __future__ import annotations

from alignment.environments.base import Environment, Step

INSTRUCTION = ("Check your answer above step by step. If it is wrong, correct it; then give "
               "your final answer.")


class SelfCorrection(Environment):
    def __init__(self, instruction: str = INSTRUCTION, alpha: float = 1.0):
        if not instruction.strip():
            raise ValueError("self_correction: instruction must not be empty")
        if alpha < 0:
            raise ValueError(f"self_correction: alpha must be >= 0, got {alpha}")
        self.instruction = instruction
        self.alpha = alpha

    def reset(self, row, verify) -> None:
        self.verify = verify
        self.first: float | None = None

    def step(self, text: str) -> Step:
        score = float(self.verify(text))
        if self.first is None:
            self.first = score
            return Step(observation=self.instruction, metrics={"accuracy_t1": score})
        return Step(done=True, reward=self.alpha * (score - self.first),
                    metrics={"accuracy_t2": score,
                             "wrong_to_right": float(score > self.first),
                             "right_to_wrong": float(score < self.first)})
