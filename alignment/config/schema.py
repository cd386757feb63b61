"""The recipe schema: one typed dataclass per YAML section.

A recipe file maps 1:1 onto `Recipe`; an unknown key is always an error. Each field is
documented once, here, where it is declared (`alignment check --help-keys` prints them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alignment.config.fields import param, section

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraConfig:
    """LoRA adapters through PEFT; r = 0 trains the full model."""

    r: int = param(0, "LoRA rank; 0 disables LoRA (full fine-tuning)", ge=0)
    alpha: int = param(32, "LoRA scaling numerator (scale = alpha / r)", gt=0)
    dropout: float = param(0.0, "dropout on the LoRA input", ge=0.0, le=1.0)
    target_modules: list[str] = param(default_factory=lambda: list(ALL_LINEAR),
                                      help="module names that get adapters")


@dataclass
class ModelConfig:
    """The policy (and, unless stated otherwise, the reference) model."""

    name: str = param("smollm2-135m", "'smollm2-135m' (bundled, no network), a local HF "
                      "folder, or a Hugging Face id already in the local cache")
    dtype: Literal["auto", "bfloat16", "float32", "float16", "float64"] = param(
        "auto", "weights/compute dtype; auto = bfloat16 where the hardware supports it "
        "(trainable weights keep an fp32 master copy), else float32; float16 only under "
        "DeepSpeed (its loss scaler), refused otherwise; float64 for numerical checks")
    reference: str | None = param(None, "reference policy π_ref (e.g. an SFT model) for "
                                  "preference losses and KL terms; null = the initial policy")
    gradient_checkpointing: bool = param(False, "trade compute for activation memory")
    lora: LoraConfig = section(LoraConfig)


@dataclass
class DataConfig:
    """Training and evaluation data: local files, folders, globs or hub datasets."""

    train: str | dict = param(
        "data/arithmetic/preference/train.jsonl", "training data: a file (jsonl, json, parquet, "
        "csv), a glob, a folder (save_to_disk, or a dataset repository cloned from the hub), a "
        "hub id (org/name, org/name:SPLIT, org/name:CONFIG:SPLIT), or a mapping {path, name, "
        "split, data_files, data_dir, revision} as datasets.load_dataset takes them; "
        "default split: train", source=True)
    eval: str | dict | None = param(
        "data/arithmetic/preference/test.jsonl", "held-out data for eval loss (as data.train; "
        "default split: test, then validation); null for none", source=True)
    train_limit: int | None = param(None, "use only the first N training rows", gt=0)
    eval_limit: int | None = param(200, "use only the first N eval rows", gt=0)
    max_length: int = param(256, "max tokens of prompt + completion", gt=1)
    max_prompt_length: int = param(128, "max prompt tokens", gt=0)
    too_long: Literal["skip", "truncate", "error"] = param(
        "skip", "rows over the limits: skip (counted and reported), truncate (prompt keeps "
        "its end, completion its start) or error")
    chat_template: bool = param(True, "render plain-string prompts through the chat template")
    system_prompt: str | None = param(None, "system message added to every prompt")


@dataclass
class TrainerConfig:
    """Optimisation loop shared by every trainer."""

    lr: float = param(5e-6, "peak learning rate", gt=0.0)
    epochs: int = param(1, "passes over the training data", ge=1)
    max_steps: int | None = param(None, "stop after this many optimizer steps (wins over "
                                  "epochs)", gt=0)
    batch_size: int = param(8, "sequences (pairs for preference data) per micro-batch "
                            "per process", gt=0)
    grad_accum: int = param(1, "micro-batches per optimizer step", gt=0)
    optimizer: Literal["adamw", "adamw_kahan", "rmsprop", "sgd"] = param(
        "adamw", "adamw: AdamW on fp32 master copies of bf16 weights; adamw_kahan: AdamW on "
        "the bf16 weights themselves with Kahan-compensated updates (torch-optimi), no fp32 "
        "copy: 10 instead of 18 bytes/parameter at the step; rmsprop; sgd")
    weight_decay: float = param(0.0, "decoupled weight decay", ge=0.0)
    scheduler: Literal["constant", "linear", "cosine"] = param(
        "linear", "LR schedule after warm-up (linear/cosine decay to 0)")
    warmup_steps: int = param(0, "linear warm-up steps from 0", ge=0)
    max_grad_norm: float | None = param(1.0, "clip the global grad norm; null = no clipping",
                                        gt=0.0)
    seed: int = param(42, "seed for data order and initialisation", ge=0)
    threads: int | None = param(None, "torch CPU threads per process; null = the machine's "
                                "cores / processes on it", gt=0)
    log_every: int = param(1, "log metrics every N optimizer steps", gt=0)
    eval_every: int | None = param(None, "eval on data.eval every N steps (and at step 0): "
                                   "held-out loss, or for online trainers greedy accuracy "
                                   "through the rollout engine; null = only at the end", gt=0)
    save_every: int | None = param(50, "checkpoint every N steps; null = only at the end",
                                   gt=0)
    keep_checkpoints: int = param(2, "checkpoints kept on disk (oldest removed)", ge=1)
    max_nan_steps: int = param(3, "stop after this many non-finite losses or gradient "
                               "norms in a row (each such step is skipped and counted)", ge=1)
    resume_ignore_changes: bool = param(
        False, "resume even when the recipe differs from the checkpoint's recipe.yaml (the "
        "differences are printed); false = stop and list them. Keys that may always change "
        "on resume: see RESUME_MAY_CHANGE in alignment/trainers/checkpoint.py")
    memory_check: bool = param(
        True, "at start-up, refuse a run whose estimated peak memory (weights, optimizer "
        "state, activations, reference / critic / engine copies, KV cache: "
        "alignment/memory_estimate.py) exceeds what the machine has; false = skip the check")


@dataclass
class OnlineConfig:
    """Keys every online algorithm's section has (the loop in `OnlineTrainer` reads them)."""

    prompts_per_step: int = param(8, "prompts sampled per step (per process)", gt=0)
    overlong_cache: int = param(0, "DAPO soft overlong punishment: the last N tokens of "
                                "rollout.max_new_tokens ramp the reward down to -1; 0 = off",
                                ge=0)
    mask_truncated: bool = param(False, "exclude samples that hit max_new_tokens from the "
                                 "loss (DAPO's overlong filtering)")
    layout: Literal["auto", "grouped", "separate", "tree"] = param(
        "auto", "training forward of a micro-batch: grouped = one row per prompt with its "
        "samples after it (prompt computed once; 4-D mask, width prompt + k x longest "
        "completion), separate = one row per sample, tree = prefix trees (several groups "
        "per row, every shared token once, no padding), auto = whichever is predicted "
        "cheapest for each micro-batch (bench/RESULTS.md); same log-probs either way")


@dataclass
class PairsOnlineConfig(OnlineConfig):
    """The online mode of the pair losses (DPO, IPO, CoPG): per step `prompts_per_step`
    prompts x `num_generations` samples from the current policy, scored by the recipe's
    `rewards:`, turned into pairs (best vs worst; CoPG: consecutive samples), one update,
    then the engine takes the new weights."""

    online: bool = param(False, "learn from pairs of the policy's own samples (needs "
                         "`rewards:` and uses `rollout:`) instead of the data's pairs")
    num_generations: int = param(4, "online: samples per prompt; the best- and worst-scored "
                                 "form the pair (ties dropped and counted)", ge=2)
    max_sampling_rounds: int = param(1, "online: while a step has fewer pairs than prompts x "
                                     "pairs per prompt (ties dropped), sample more prompts, "
                                     "up to this many rounds (DAPO-style refill)", ge=1)


@dataclass
class DPOConfig(PairsOnlineConfig):
    """DPO (Rafailov et al. 2023); see ALGORITHMS.md section 2."""

    beta: float = param(0.1, "KL strength beta of the implicit reward", gt=0.0)
    sft_weight: float = param(0.0, "weight of an added NLL loss on the chosen response "
                              "(per token; Pang et al. 2024 'RPO', TRL rpo_alpha); 0 = plain "
                              "DPO", ge=0.0)
    reference: Literal["precompute", "model"] = param(
        "precompute", "offline: reference log-probs computed once before training, or by a "
        "frozen model at every step (online: always per step)")


@dataclass
class IPOConfig(PairsOnlineConfig):
    """IPO (Azar et al. 2024); see ALGORITHMS.md section 3."""

    tau: float = param(0.1, "regularisation tau; the target margin is 1/(2 tau)", gt=0.0)
    normalize: Literal["sum", "mean"] = param(
        "mean", "sequence log-ratio as a sum over tokens (paper) or per-token mean (TRL; "
        "tau is then per token)")
    reference: Literal["precompute", "model"] = param(
        "precompute", "as dpo.reference")


@dataclass
class CoPGConfig(PairsOnlineConfig):
    """CoPG (Flet-Berliac et al. 2024): two completions of a prompt, a scalar reward each;
    ALGORITHMS.md section 5. Offline on the data's pairs (chosen/rejected columns are just
    the two completions), or online with 2 samples per prompt (= RLOO with k = 2)."""

    beta: float = param(0.06, "KL strength beta (paper: 0.06, stable 0.03-0.1)", gt=0.0)
    num_generations: int = param(2, "online: samples per prompt, paired as (1,2), (3,4), ... "
                                 "(2 = RLOO with k = 2)", ge=2)
    rewards_from: Literal["columns", "scorer"] = param(
        "columns", "offline: each completion's reward from data columns (copg.reward_columns) "
        "or scored once at load time by the recipe's `rewards:` (e.g. the verifier)")
    reward_columns: list[str] = param(
        default_factory=lambda: ["chosen_reward", "rejected_reward"],
        help="offline, rewards_from: columns: the reward columns of the two completions")
    reference: Literal["precompute", "model"] = param("precompute", "as dpo.reference")


@dataclass
class SPINConfig:
    """SPIN (Chen et al. 2024): iterations of "generate y' for every SFT prompt with the
    current model, then DPO-like training on (real, generated) against that frozen model";
    ALGORITHMS.md section 6. Generation goes through the rollout engine (`rollout:`), and
    every iteration's generated data is saved under output_dir/spin/."""

    iterations: int = param(3, "iterations t = 0..T-1 (paper: 4)", ge=1)
    epochs: int = param(1, "passes over each iteration's pairs (paper: 2)", ge=1)
    lam: list[float] = param(default_factory=lambda: [0.1],
                             help="lambda per iteration; the last value repeats (paper: "
                             "[0.1, 0.1, 0.1, 5.0])")
    loss_type: Literal["sigmoid", "hinge"] = param("sigmoid", "logistic (paper) or hinge loss")
    mix_previous: float = param(0.0, "share of the previous iteration's pairs added to the "
                                "new ones (paper: 1.0 = all of them)", ge=0.0, le=1.0)


@dataclass
class RewardModelConfig:
    """Bradley-Terry reward model on preference pairs: a 1-output classification head, or
    the causal LM's own log-likelihood (`kind: likelihood`)."""

    kind: Literal["classifier", "likelihood"] = param(
        "classifier", "classifier = a linear head on the last token (a plain "
        "AutoModelForSequenceClassification, TRL-compatible); likelihood = r(x, y) = beta * "
        "log p(y | x) under the causal LM itself, trained with the same Bradley-Terry loss")
    beta: float = param(0.1, "kind likelihood: the scale of the reward, beta * summed "
                        "completion log-prob (as DPO's beta)", gt=0.0)
    reference: bool = param(False, "kind likelihood: r = beta * log p(y|x)/p_ref(y|x) against "
                            "the model it starts from (DPO's implicit reward), trained and "
                            "scored so: text training did not touch scores ~0 whatever its "
                            "length, where a plain sum of log-probs makes every token a cost")
    judge: Literal["completion", "answer"] = param(
        "completion", "what the trained model scores (recorded in its folder, read by "
        "`alignment score`, best-of-N and RL): completion = the whole completion; answer = "
        "only its final answer (the number the verifier reads), written alone: length and "
        "wording cannot move the score, a completion with no answer scores lowest")
    center_weight: float = param(0.0, "weight of mean((r_chosen + r_rejected)^2), keeping "
                                 "rewards centred on 0 (TRL center_rewards_coefficient)", ge=0.0)
    token_weight: float = param(0.0, "weight of the token-level verifier term: the head, at "
                                "every completion token from where chosen and rejected first "
                                "differ, predicts which one it reads (Cobbe et al. 2021)",
                                ge=0.0)
    lm_weight: float = param(0.0, "weight of a next-token loss on the chosen completion "
                             "through the tied embeddings (Yang et al. 2024): teaches the "
                             "network the result it must check", ge=0.0)
    lm_layer: int | None = param(None, "the layer whose output the lm_weight term reads "
                                 "(through the final norm); null = the last. A middle layer "
                                 "makes the network compute the result early, leaving the "
                                 "layers above to compare it with what was written", ge=1)


@dataclass
class GRPOConfig(OnlineConfig):
    """GRPO (Shao et al. 2024) and its DAPO / Dr. GRPO variants; ALGORITHMS.md section 8.
    One step = `prompts_per_step` prompts x `num_generations` samples, scored, then
    `iterations` optimizer updates on that batch (micro-batches of trainer.batch_size)."""

    num_generations: int = param(8, "samples per prompt G (the group)", ge=2)
    beta: float = param(0.0, "k3 KL coefficient in the loss (paper 0.04); 0 = no reference "
                        "model is loaded", ge=0.0)
    clip_low: float = param(0.2, "clip range below 1 for the ratio (epsilon / epsilon_low)",
                            ge=0.0, le=1.0)
    clip_high: float = param(0.2, "clip range above 1 (DAPO's clip-higher: 0.28)", ge=0.0)
    aggregation: Literal["grpo", "token_mean", "dr_grpo"] = param(
        "grpo", "loss reduction: grpo = mean of per-sequence token means (paper), "
        "token_mean = over all tokens of the step (DAPO), dr_grpo = sum / (samples x "
        "rollout.max_new_tokens) (Dr. GRPO)")
    scale_rewards: bool = param(True, "divide advantages by the group's std (false = Dr. "
                                "GRPO's mean-only advantages)")
    std_eps: float = param(1e-4, "added to the group std", ge=0.0)
    iterations: int = param(1, "optimizer updates per rollout batch (mu); > 1 computes "
                            "pi_old once and clips", ge=1)
    dynamic_sampling: bool = param(False, "DAPO: drop groups whose rewards are all equal and "
                                   "sample more prompts to refill the batch")
    max_sampling_rounds: int = param(3, "dynamic sampling: generation rounds per step at most",
                                     ge=1)
    is_cap: float | None = param(None, "truncated importance sampling (Yao et al. 2025): weight "
                                 "each token's surrogate by min(pi_trainer / pi_engine, is_cap), "
                                 "both as sampled; corrects for the engine's other numerics "
                                 "(e.g. 2.0); null = off", gt=0.0)


@dataclass
class ActorCriticConfig(OnlineConfig):
    """The actor-critic loop shared by PPO, APA and DR-PO (ALGORITHMS.md §1.2-1.3): per step
    `prompts_per_step` x `samples_per_prompt` rollouts -> per-token rewards (score at the
    last token, KL in the reward) -> GAE with the critic -> whitened advantages ->
    `epochs` x `minibatches` optimizer steps on policy + value loss."""

    prompts_per_step: int = param(16, "prompts sampled per step (per process)", gt=0)
    samples_per_prompt: int = param(4, "samples per prompt (1 in the papers; more reuse the "
                                    "prompt's forward pass)", gt=0)
    epochs: int = param(4, "passes over each rollout batch (PPO epochs)", ge=1)
    minibatches: int = param(1, "optimizer steps per pass (the batch split by prompt)", ge=1)
    gamma: float = param(1.0, "discount", ge=0.0, le=1.0)
    gae_lambda: float = param(0.95, "GAE lambda", ge=0.0, le=1.0)
    kl_coef: float = param(0.05, "beta_KL: per-token KL penalty in the reward; 0 = none (and no "
                           "reference model unless the loss needs one)", ge=0.0)
    kl_estimator: Literal["k1", "k3"] = param("k1", "per-token KL estimate in the reward")
    kl_target: float | None = param(None, "adaptive KL (Ziegler et al.): steer beta_KL so the "
                                    "per-sequence KL nears this; null = fixed kl_coef", gt=0.0)
    kl_horizon: float = param(10000.0, "adaptive KL horizon, in samples", gt=0.0)
    whiten_rewards: bool = param(False, "scale per-token rewards by their std over the batch "
                                 "(mean kept; N+ / DR-PO code)")
    vf_coef: float = param(0.1, "value-loss weight c_v", ge=0.0)
    value_clip: float | None = param(0.2, "value clip range eps_v; null = unclipped", gt=0.0)
    missing_eos_penalty: float | None = param(
        -1.0, "score of a response that hit rollout.max_new_tokens without EOS (N+ 'EOS "
        "trick'); null = keep the scorer's", le=0.0)
    # PPO-max (Zheng et al. 2023, arXiv:2307.04964, docs/algorithms/ppo.md#ppo-max)
    reward_norm: bool = param(False, "PPO-max: normalise each score by the running mean and "
                              "std of every score seen so far (all steps, all processes; kept "
                              "in checkpoints)")
    reward_clip: float | None = param(None, "PPO-max: clip the score (normalised, with "
                                      "reward_norm) to [-c, c] before it enters the per-token "
                                      "rewards; null = no clipping", gt=0.0)
    advantage_clip: float | None = param(None, "PPO-max: clip the whitened advantages to "
                                         "[-c, c]; null = no clipping", gt=0.0)
    ptx_coef: float = param(0.0, "PPO-ptx (InstructGPT; PPO-max's pretrain loss): add "
                            "ptx_coef x the token-mean NLL of a micro-batch of ptx_data "
                            "demonstrations to every optimizer step; 0 = off", ge=0.0)
    ptx_data: str | None = param(None, "prompt/completion (or messages) demonstrations for "
                                 "ptx_coef, read as SFT data (data.* length settings apply); "
                                 "a file, folder, glob or hub id", source=True)
    ptx_batch_size: int | None = param(None, "demonstrations per optimizer step, per process; "
                                       "null = trainer.batch_size", gt=0)
    critic_warmup_steps: int = param(0, "PPO-max's critic pre-training: the first K steps "
                                     "train only the critic (the policy's loss weighs 0 and "
                                     "its learning rate is 0; no ptx term)", ge=0)


@dataclass
class PPOConfig(ActorCriticConfig):
    """PPO (Schulman et al. 2017) as in RLHF (InstructGPT, N+); ALGORITHMS.md section 1."""

    clip: float = param(0.2, "ratio clip range epsilon", gt=0.0, le=1.0)


@dataclass
class APAConfig(ActorCriticConfig):
    """APA (Zhu et al. 2023): squared error of log pi onto log pi_init + A/lam;
    ALGORITHMS.md section 4. Defaults follow microsoft/RLHF-APA."""

    lam: float = param(0.1, "advantage coefficient lambda (the code's adv_coeff_sq = 1/lam)",
                       gt=0.0)
    epochs: int = param(2, "passes over each rollout batch", ge=1)
    kl_coef: float = param(0.0, "per-token KL penalty in the reward; 0 as in the reference "
                           "code (the anchor to pi_init does the KL control)", ge=0.0)
    vf_coef: float = param(1.0, "value-loss weight", ge=0.0)
    value_clip: float | None = param(None, "value clip range; null = unclipped (the code)",
                                     gt=0.0)


@dataclass
class DRPOConfig(PPOConfig):
    """DR-PO (Chang et al. 2024): PPO whose rollouts start from prefixes of the data's
    reference responses; ALGORITHMS.md section 7. Forced tokens are context: no policy
    loss, no KL, no value loss on them."""

    reset_prob: float = param(1.0, "probability that a sample is reset (beta_reset; 0 = PPO)",
                              ge=0.0, le=1.0)
    reset_column: str = param("completion", "data column holding the reference response "
                              "(text) to reset into")


@dataclass
class CriticConfig:
    """The value model of PPO, APA and DR-PO: trained with the policy, in the same module,
    engine and optimizer (its own learning rate)."""

    init: Literal["policy", "reward_model"] = param(
        "policy", "policy = the policy's weights with a fresh scalar head; reward_model = a "
        "sequence-classification folder (critic.path), as InstructGPT / N+ do")
    path: str | None = param(None, "reward-model folder (or training output dir) for "
                             "init: reward_model", path=True)
    lr: float | None = param(None, "critic learning rate; null = trainer.lr", gt=0.0)
    lora: LoraConfig = section(LoraConfig)


@dataclass
class RolloutConfig:
    """The rollout engine used by online trainers (`alignment.rollout`)."""

    backend: Literal["auto", "vllm", "hf"] = param(
        "auto", "vllm where installed (in-process), else transformers generate")
    temperature: float = param(1.0, "sampling temperature (log-probs use the same one)",
                               gt=0.0)
    top_p: float = param(1.0, "nucleus sampling", gt=0.0, le=1.0)
    top_k: int = param(0, "top-k sampling; 0 = off", ge=0)
    max_new_tokens: int = param(64, "completion budget per sample", gt=0)
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = param(
        "auto", "engine dtype (vllm); auto = the policy's dtype")
    kv_cache_gb: Literal["auto"] | float = param(
        "auto", "vllm on CPU: KV-cache memory in GiB, or auto = what the run's largest "
        "generate call needs at once (sequences x (data.max_prompt_length + max_new_tokens) x "
        "the model's KV bytes per token, x 1.25), printed at engine start; on CUDA the "
        "engine's share is gpu_memory_utilization", gt=0.0)
    gpu_memory_utilization: float = param(0.3, "vllm on CUDA: fraction of GPU memory the "
                                          "engine may take (the rest is for training)",
                                          gt=0.0, le=1.0)
    timeout_s: float = param(1800.0, "seconds one engine call (generate, weight sync) may "
                             "take before the engine counts as hung: the run then saves a "
                             "checkpoint where it can and exits with status 3; 0 = no limit",
                             ge=0.0)


@dataclass
class EnvironmentConfig:
    """Multi-turn rollouts for online trainers (`alignment.environments`): the model's turns
    alternate with an environment's replies; only the model's tokens are trained on."""

    name: str | None = param(None, "null = one completion per sample; a built-in "
                             "(python_tool, self_correction) or 'package.module:Name'")
    options: dict = param(default_factory=dict, help="the environment's constructor "
                          "arguments (e.g. python_tool: {timeout_s: 5, memory_mb: 256})")
    max_turns: int = param(2, "model turns per episode", ge=1)
    max_episode_tokens: int = param(256, "tokens of an episode after the prompt: every model "
                                    "turn (each at most rollout.max_new_tokens) and every "
                                    "environment reply", gt=0)
    workers: int = param(4, "environments stepped at once (a tool call waits on a sandbox)",
                         gt=0)
    first_turn_kl: float = param(0.0, "GRPO: a KL coefficient on the first model turn's "
                                 "tokens against the starting model, added to grpo.beta "
                                 "(SCoRe's stage I holds the first attempt with it)", ge=0)


@dataclass
class EvalConfig:
    """Generation eval (greedy exact-answer accuracy) run by `alignment eval` / the demo."""

    data: str | dict = param("data/arithmetic/rl/test.jsonl", "prompt/answer data (a file, "
                             "folder, glob, hub id or mapping, as data.train)", source=True)
    limit: int | None = param(200, "evaluate only the first N rows", gt=0)
    max_new_tokens: int = param(64, "generation budget per answer", gt=0)
    batch_size: int = param(32, "prompts per generate call", gt=0)
    before_after: bool = param(True, "evaluate the base model before and the result after "
                               "training")


@dataclass
class LaunchConfig:
    """How `alignment train` starts processes. With more than one process it hands the run
    to a launcher itself (torchrun on CPU, `accelerate launch` on GPUs / DeepSpeed / FSDP);
    null values come from the Accelerate config file, else single-process defaults."""

    config_file: str | None = param(None, "accelerate config file (launch/*.yaml): "
                                    "distribution type, DeepSpeed / FSDP settings", path=True)
    num_processes: int | None = param(None, "processes in total, over all machines "
                                      "(default: the config file's, else 1)", gt=0)
    num_machines: int | None = param(None, "machines (nodes) taking part (default: the "
                                     "config file's, else 1)", gt=0)
    machine_rank: int | None = param(None, "this machine's rank, 0 .. num_machines-1 "
                                     "(default: the config file's, else 0)", ge=0)
    main_process_ip: str | None = param(None, "address of machine 0 (rendezvous; default: "
                                        "the config file's, else 127.0.0.1)")
    main_process_port: int | None = param(None, "rendezvous port on machine 0 (default: the "
                                          "config file's, else 29500)", gt=0, le=65535)


@dataclass
class LoggingConfig:
    """Where and how progress is reported (metrics.jsonl and summary.json are always
    written; docs/tracking.md)."""

    report_to: list[Literal["tensorboard", "wandb", "trackio", "mlflow", "none"]] = param(
        default_factory=lambda: ["tensorboard"],
        help="experiment trackers, through Accelerate's: tensorboard (event files under "
        "output_dir/logs/<run_name>), wandb, trackio, mlflow; [] or [none] for none. Each "
        "gets the metrics and the resolved recipe as the run's config; a resumed run "
        "continues the same tracker run. A tracker that is not installed is refused")
    run_name: str | None = param(None, "the run's name in every tracker; null = the name of "
                                 "output_dir's last folder (e.g. 'dpo' for runs/dpo)")
    project: str = param("alignment", "wandb / trackio project and mlflow experiment "
                         "(the environment's MLFLOW_EXPERIMENT_NAME wins for mlflow)")
    progress_bar: bool = param(True, "live progress bar (off automatically when not a TTY)")


ALGORITHMS = ("dpo", "ipo", "copg", "spin", "reward_model", "grpo", "ppo", "apa", "drpo")
ONLINE = ("grpo", "ppo", "apa", "drpo")   # algorithms that always learn from their samples
PAIRS_ONLINE = ("dpo", "ipo", "copg")     # pair losses with an `online:` switch
# recipe sections only sampling / scoring runs use
ONLINE_SECTIONS = ("rollout", "rewards", "environment")
CRITIC = ("ppo", "apa", "drpo")          # algorithms with a value model (`critic:`)


def is_online(recipe: Recipe) -> bool:
    """Does this run train on the policy's own scored samples (the online loop)?"""
    return recipe.algorithm in ONLINE or (recipe.algorithm in PAIRS_ONLINE
                                          and getattr(recipe, recipe.algorithm).online)


def completion_budget(recipe: Recipe) -> int:
    """Tokens a sample may take after its prompt: rollout.max_new_tokens, or with an
    environment the whole episode's (environment.max_episode_tokens)."""
    if recipe.environment.name is not None and is_online(recipe):
        return recipe.environment.max_episode_tokens
    return recipe.rollout.max_new_tokens


def uses_rollout(recipe: Recipe) -> bool:
    """Does this run generate through the rollout engine (`rollout:`)?"""
    return is_online(recipe) or recipe.algorithm == "spin"


def uses_rewards(recipe: Recipe) -> bool:
    """Does this run score completions with the recipe's `rewards:`?"""
    return is_online(recipe) or (recipe.algorithm == "copg"
                                 and recipe.copg.rewards_from == "scorer")


@dataclass
class Recipe:
    """A whole run: model, data, algorithm and its hyper-parameters, launch, logging."""

    algorithm: Literal["dpo", "ipo", "copg", "spin", "reward_model", "grpo", "ppo", "apa",
                       "drpo", "sft"] = param(
        help="the trainer to run")
    output_dir: str = param("runs/{algorithm}", "where checkpoints, logs and the summary go; "
                            "{algorithm} is substituted")
    first_stage: str | None = param(
        None, "a recipe to train before this one (stage one of a pipeline, e.g. "
        "recipes/sft_mix.yaml): `alignment train` runs it first unless its output_dir holds a "
        "trained final/ model, resuming it from its last checkpoint if it was interrupted; "
        "paths inside its output_dir (model.name, a reward model) are checked once it has "
        "run", path=True)
    model: ModelConfig = section(ModelConfig)
    data: DataConfig = section(DataConfig)
    trainer: TrainerConfig = section(TrainerConfig)
    dpo: DPOConfig = section(DPOConfig)
    ipo: IPOConfig = section(IPOConfig)
    copg: CoPGConfig = section(CoPGConfig)
    spin: SPINConfig = section(SPINConfig)
    reward_model: RewardModelConfig = section(RewardModelConfig)
    grpo: GRPOConfig = section(GRPOConfig)
    ppo: PPOConfig = section(PPOConfig)
    apa: APAConfig = section(APAConfig)
    drpo: DRPOConfig = section(DRPOConfig)
    critic: CriticConfig = section(CriticConfig)
    rollout: RolloutConfig = section(RolloutConfig)
    environment: EnvironmentConfig = section(EnvironmentConfig)
    rewards: list[dict] = param(
        default_factory=lambda: [{"name": "exact_answer"}],
        help="online trainers (and offline CoPG scoring its pairs): reward parts, each "
             "{name, weight (1), constraint (false), label, scorer options...}; name = a "
             "built-in (exact_answer, math_equiv, regex, python_tests, reward_model) or "
             "'package.module:Name'")
    eval: EvalConfig = section(EvalConfig)
    launch: LaunchConfig = section(LaunchConfig)
    logging: LoggingConfig = section(LoggingConfig)
