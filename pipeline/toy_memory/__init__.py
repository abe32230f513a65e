"""The toy associative memory of the paper's claim C22 (Fig Q, R): not a language model, a plain PyTorch MLP
that memorises random key -> value pairs, then forgets them when fine-tuned on new ones.

    python -m pipeline.toy_memory --config recipes/toy_memory/pretrain.yaml
    python -m pipeline.toy_memory --config recipes/toy_memory/finetune.yaml [--n_new 128 --replay_weight 0.5]

The paper's protocol: keys are 64-d Gaussian vectors normalised onto the unit sphere; there are 30 values;
one hidden layer of 256 ReLU units; 8,192 pairs; AdamW, cosine learning rate 0.03, 16k steps of 128, weight
decay 0.01; fine-tuning at a constant 1e-3 for 4,000 steps on new pairs, with or without replay.

Where the paper leaves details open, the simplest faithful reading:
- the 30 values are classes: the model maps a key to 30 logits, trained with cross-entropy on the key's class
  (drawn uniformly); the value vectors themselves never enter the model, so none are drawn;
- the cosine schedule decays to 0 at max_steps, AdamW keeps PyTorch's betas (0.9, 0.999), and fine-tuning
  starts a fresh optimizer with the same weight decay;
- replay as in the language model's `Replay` sampler: each drawn pair is an old one (uniform over the 8,192)
  with probability w / (1 + w), else a new one;
- `heldout` pairs (never trained on) are evaluated beside `seen` (pretraining) or `old` and `new`
  (fine-tuning), so that the trajectory reads like a language-model run's (run_phases, forgetting_summary,
  study summaries); loss is the mean cross-entropy, the baseline log(30).

A run folder holds run_config.yaml, trajectory.jsonl, checkpoints/step-<max_steps>/ (the final weights),
phases.json or finetune.json, and the figure. Rerunning a finished run does nothing; an interrupted one
restarts (a run takes seconds to minutes).
"""

from .stage import ARGUMENTS, main, run_toy_memory

__all__ = ["ARGUMENTS", "main", "run_toy_memory"]
