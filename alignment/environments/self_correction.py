"""`self_correction`: after its first answer the model is asked to check and revise it;
the episode is the two attempts (Kumar et al. 2024, "Training Language Models to
Self-Correct via Reinforcement Learning", SCoRe).

Reward, SCoRe's stage II: both attempts count, and the second gets the shaping bonus
α·(r(y2) − r(y1)), which pays for turning a wrong first answer into a right one and
charges for the reverse, so that "answer twice the same" is not the best policy:

    R = w·r(y1) + r(y2) + α·(r(y2) − r(y1))

r(y2) is the recipe's `rewards:` on the episode's last turn; r(y1) and the r(y2) inside the
bonus are the recipe's verifier. With w = 0 nothing stops the policy from answering badly
on purpose the first time (the bonus then pays for every fix it stages): keep w > 0.
Logged per episode: `accuracy_t1`, `accuracy_t2`, and the two flips `wrong_to_right` /
`right_to_wrong` (their Δ(t1, t2) = accuracy_t2 − accuracy_t1).
"""

from __future__ import annotations

from alignment.environments.base import Environment, Step

INSTRUCTION = ("Check your answer above step by step. If it is wrong, correct it; then give "
               "your final answer.")


class SelfCorrection(Environment):
    def __init__(self, instruction: str = INSTRUCTION, alpha: float = 1.0,
                 first_attempt_weight: float = 1.0):
        if not instruction.strip():
            raise ValueError("self_correction: instruction must not be empty")
        if alpha < 0 or first_attempt_weight < 0:
            raise ValueError(f"self_correction: alpha and first_attempt_weight must be >= 0, "
                             f"got {alpha} and {first_attempt_weight}")
        self.instruction = instruction
        self.alpha = alpha
        self.first_weight = first_attempt_weight

    def reset(self, row, verify) -> None:
        self.verify = verify
        self.first: float | None = None

    def step(self, text: str) -> Step:
        score = float(self.verify(text))
        if self.first is None:
            self.first = score
            return Step(observation=self.instruction, reward=self.first_weight * score,
                        metrics={"accuracy_t1": score})
        return Step(done=True, reward=self.alpha * (score - self.first),
                    metrics={"accuracy_t2": score,
                             "wrong_to_right": float(score > self.first),
                             "right_to_wrong": float(score < self.first)})
