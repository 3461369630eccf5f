"""A training run's settings: the typed sections ``[data]``, ``[model]``, ``[train]`` and ``[sample]``.

The defaults here are the one set of defaults: what ``python train.py`` does with no arguments (a
small GPT on the Python standard library's sources, on a laptop CPU, for 8 minutes).  ``[model]`` is
``model.GPTConfig`` itself (less ``vocab_size``, which comes from the dataset), so a model option and
its default exist in exactly one place; GPT-2's shape is the preset ``GPTConfig.gpt2()``.  Recipes
measured for other budgets and corpora are TOML files in ``config/`` and the budget rules of
``smallgpt/recipes.py``.  Each section checks its own values (``check``), and the command line
around them is ``smallgpt/cli.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from model import LONG_CONTEXT, GPTConfig
from smallgpt.averaging import AVERAGES
from smallgpt.cli import Settings, comma_list, need
from smallgpt.formats import FORMATS
from smallgpt.recipes import BUDGET_RULES


@dataclass
class DataConfig:
    source: str | list[str] = "python-stdlib"  # file (text, JSON Lines, JSON, Parquet, token shards), directory, glob, list of them, http(s) URL, or 'python-stdlib'
    format: str = "auto"  # how files are read: 'auto' (by suffix and content), 'text', 'jsonl', 'json', 'parquet' or 'tokens' (llm.c GPT-2 shards)
    text_field: str | list[str] = "text"  # the text of a JSON record or Parquet row: a field, a dotted path (meta.body), or several joined by a blank line (a list; comma-separated on the command line)
    tokenizer: str = "bpe"  # 'bytes', 'bpe' (trained on the corpus), a tiktoken name ('gpt2', ...) or a .tiktoken file
    vocab_size: int = 4096  # vocabulary size of a trained 'bpe' tokenizer (257 or more; above 65536 tokens are stored as uint32)
    val_fraction: float = 0.1  # fraction of the corpus, taken from its end, held out for validation
    dir: str = ""  # dataset directory; empty: data/<source>-<tokenizer>
    sha256: str = ""  # expected sha256 of an http(s) source (required for URLs)
    bpe_train_bytes: int = 8_000_000  # BPE is trained on an evenly spread sample of this many bytes of the corpus
    force: bool = False  # rebuild the dataset even if one with the same settings exists
    threads: int = 0  # threads that encode the corpus in parallel; 0 = one per CPU core

    def check(self) -> None:
        need(0.0 < self.val_fraction < 1.0, "data.val_fraction",
             f"must be between 0 and 1 (exclusive), got {self.val_fraction}")
        need(257 <= self.vocab_size <= 1 << 20, "data.vocab_size", f"must be at least 257, got {self.vocab_size}")
        need(self.bpe_train_bytes > 0, "data.bpe_train_bytes", "must be positive")
        need(self.threads >= 0, "data.threads", "must be 0 (one per CPU core) or more")
        need(self.format in FORMATS, "data.format", f"must be one of {', '.join(repr(f) for f in FORMATS)}, got {self.format!r}")
        need(bool(self.text_fields) and all(part for f in self.text_fields for part in f.split(".")),
             "data.text_field", f"must name a field (or a dotted path, or several), got {self.text_field!r}")

    @property
    def sources(self) -> list[str]:
        """``source`` as a list, whether the user gave one item or several."""
        return [self.source] if isinstance(self.source, str) else list(self.source)

    @property
    def text_fields(self) -> list[str]:
        """``text_field`` as a list of fields: a TOML list, or a comma-separated string."""
        return comma_list(self.text_field) if isinstance(self.text_field, str) else [f.strip() for f in self.text_field]


@dataclass
class TrainConfig:
    out_dir: str = "out"  # run directory: checkpoints, metrics.jsonl, config.toml
    device: str = "auto"  # 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:1', 'mps'
    dtype: str = "auto"  # 'auto' (bf16 on GPUs that support it, else fp16; on a CPU bf16 autocast where measured faster, else fp32), 'float32', 'bfloat16', 'float16'
    compile: str = "auto"  # torch.compile: 'true', 'false', or 'auto' (when the run is long enough to pay the compile back)
    deterministic: bool = False  # CUDA: deterministic kernels (torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG), so a resumed run repeats an uninterrupted one bit for bit there too; slower. A CPU run is deterministic already
    seed: int = 1337  # seed for weights, data order and dropout
    batch_size: int = 16  # sequences per micro-batch (per process)
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step, summed over all processes
    max_iters: int = 1_000_000  # optimizer steps to train for (the run also stops at max_seconds)
    max_seconds: float = 480.0  # budget of training time in seconds (evaluation excluded); 0 = none. When set, the schedule follows time
    optimizer: str = "muon"  # 'muon' (orthogonalised momentum for the 2-D weights inside the blocks, AdamW for the rest) or 'adamw'
    learning_rate: float = 1e-2  # peak AdamW learning rate (with Muon: of the embeddings, head and gains)
    embedding_lr: float = 0.0  # peak learning rate of the token and position embeddings (and of the head when tied); 0 = train.learning_rate
    head_lr: float = 0.0  # peak learning rate of the untied LM head; 0 = train.learning_rate
    scalar_lr: float = 0.0  # peak learning rate of the norm gains and biases; 0 = train.learning_rate
    min_lr: float = 1e-3  # AdamW learning rate at the end of the decay
    muon_lr: float = 0.02  # peak Muon learning rate (optimizer = 'muon')
    muon_momentum: float = 0.95  # Muon momentum
    muon_weight_decay: float = 0.0  # decoupled weight decay of the Muon-trained matrices (optimizer = 'muon')
    muon_split_qkv: bool = False  # Muon orthogonalises the fused attention projection's q, k and v blocks apart, as the three matrices they are (modded-nanogpt), not the stack as one
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.99  # AdamW beta2
    weight_decay: float = 0.1  # AdamW weight decay, applied to 2-D weights only
    schedule: str = "wsd"  # 'cosine' (warmup, cosine decay) or 'wsd' (warmup, stable, linear decay)
    warmup_iters: int = 20  # linear warmup steps
    lr_decay_iters: int = 5000  # steps over which the cosine decays to min_lr (independent of max_iters)
    decay_fraction: float = 0.3  # 'wsd': the final fraction of the run spent decaying to min_lr
    grad_clip: float = 1.0  # clip the gradient norm to this; 0 = off
    eval_interval: int = 100  # evaluate every this many steps (and at the end)
    eval_iters: int = 10  # batches per evaluation (always the same windows)
    eval_early: int = 0  # also evaluate every this many steps before step eval_interval: the start of the curve in detail; 0 = off
    log_interval: int = 10  # write a metrics record every this many steps
    checkpoint_interval: int = 200  # write ckpt.pt every this many steps (and at the end)
    resume: bool = False  # continue the run in out_dir from its ckpt.pt
    overwrite: bool = False  # allow a new run to replace a finished run in out_dir
    distill_from: str = ""  # teachers: run directories or checkpoints of this project's models (comma-separated: an ensemble); the loss adds the KL divergence from their mean probabilities; empty = off
    distill_weight: float = 0.5  # the share of the loss that is the divergence from the teachers (distill_from); the rest is the cross-entropy
    init_from: str = ""  # empty: from scratch; else fine-tune a run directory or checkpoint, a Hugging Face GPT-2 directory, or gpt2, gpt2-medium, gpt2-large, gpt2-xl (local Hugging Face cache)
    sample_at_end: bool = True  # print a short sample when training ends
    budget_rule: str = ""  # '' (off) or 'text': settings chosen from max_seconds by smallgpt/recipes.py (those given on the command line win; no effect without max_seconds)
    average: str = ""  # weight averaging over the end of the run: '' (off), 'ema' or 'lawa'; checkpoints then hold the average (smallgpt/averaging.py)
    average_start: float = -1.0  # fraction of the run (of max_seconds when set, else of max_iters) after which weights are averaged; -1: where the decay starts
    average_beta: float = 0.98  # average = 'ema': the moving average's decay per step (a window of about 1 / (1 - beta) steps)
    average_every: int = 20  # average = 'lawa': steps between the snapshots averaged
    average_k: int = 10  # average = 'lawa': the number of latest snapshots averaged
    tensorboard: bool = False  # also write TensorBoard scalars to out_dir/tensorboard/ (needs: pip install tensorboard)
    wandb_project: str = ""  # also log the scalars to this Weights & Biases project (needs: pip install wandb; WANDB_MODE=offline works without a network); empty = off
    wandb_run: str = ""  # the W&B run's name; empty: the run directory's name

    @property
    def averaging_from(self) -> float:
        """The fraction of the run after which weights are averaged (train.average_start, -1 resolved)."""
        return 1.0 - self.decay_fraction if self.average_start == -1 else self.average_start

    def check(self) -> None:
        need(self.batch_size >= 1, "train.batch_size", f"must be at least 1, got {self.batch_size}")
        need(self.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps", "must be at least 1")
        need(self.max_iters >= 0, "train.max_iters", "must be 0 or more")
        need(self.max_seconds >= 0, "train.max_seconds", "must be 0 (no limit) or more")
        need(self.learning_rate > 0, "train.learning_rate", f"must be positive, got {self.learning_rate}")
        need(0 <= self.min_lr <= self.learning_rate, "train.min_lr", "must be between 0 and train.learning_rate")
        need(self.muon_lr > 0, "train.muon_lr", "must be positive")
        for key in ("embedding_lr", "head_lr", "scalar_lr"):
            need(getattr(self, key) >= 0, f"train.{key}", "must be 0 (train.learning_rate) or positive")
        need(0 <= self.muon_momentum < 1, "train.muon_momentum", "must be in [0, 1)")
        need(self.muon_weight_decay >= 0, "train.muon_weight_decay", "must be 0 or more")
        need(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1", "beta1 and beta2 must be in [0, 1)")
        need(self.weight_decay >= 0, "train.weight_decay", "must be 0 or more")
        need(self.optimizer in ("adamw", "muon"), "train.optimizer", f"must be 'adamw' or 'muon', got {self.optimizer!r}")
        need(self.schedule in ("cosine", "wsd"), "train.schedule", f"must be 'cosine' or 'wsd', got {self.schedule!r}")
        need(self.warmup_iters >= 0, "train.warmup_iters", "must be 0 or more")
        need(self.lr_decay_iters >= 1, "train.lr_decay_iters", "must be at least 1")
        need(0 <= self.decay_fraction <= 1, "train.decay_fraction", "must be between 0 and 1")
        need(self.grad_clip >= 0, "train.grad_clip", "must be 0 (off) or more")
        need(0 < self.distill_weight <= 1, "train.distill_weight", "must be more than 0 and at most 1")
        need(self.eval_early >= 0, "train.eval_early", "must be 0 (off) or more")
        for key in ("eval_interval", "eval_iters", "log_interval", "checkpoint_interval"):
            need(getattr(self, key) >= 1, f"train.{key}", "must be at least 1")
        need(self.compile in ("auto", "true", "false"), "train.compile",
             f"must be 'auto', 'true' or 'false', got {self.compile!r}")
        need(self.dtype in ("auto", "float32", "bfloat16", "float16"), "train.dtype",
             f"must be 'auto', 'float32', 'bfloat16' or 'float16', got {self.dtype!r}")
        need(self.average in AVERAGES, "train.average", f"must be '', 'ema' or 'lawa', got {self.average!r}")
        need(self.average_start == -1 or 0 <= self.average_start <= 1, "train.average_start",
             "must be -1 (where the decay starts) or between 0 and 1")
        need(0 < self.average_beta < 1, "train.average_beta", "must be between 0 and 1 (exclusive)")
        need(self.average_every >= 1 and self.average_k >= 1, "train.average_every",
             "average_every and average_k must be at least 1")
        need(self.budget_rule in ("", *BUDGET_RULES), "train.budget_rule",
             f"must be '' (off) or one of {', '.join(repr(r) for r in BUDGET_RULES)}, got {self.budget_rule!r}")


@dataclass
class SampleConfig:
    checkpoint: str = ""  # run directory or checkpoint file; empty: train.out_dir
    prompt: str = "\n"  # the text to continue, or FILE:path to read it from a file
    num_samples: int = 1  # samples generated together as one batch
    max_new_tokens: int = 500  # tokens to generate per sample
    temperature: float = 0.8  # softmax temperature; 0 = greedy
    top_k: int = 200  # keep only the k most likely tokens; 0 = off
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of tokens with this much probability; 1 = off
    seed: int = 1337  # random seed: the same seed gives the same text
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'mps'
    dtype: str = "auto"  # 'auto' (the precision the run trained in, where this device has it), 'float32', 'bfloat16', 'float16'
    long_context: str = "sinks"  # past the context: 'sinks' (a rolling KV cache that keeps the first sink_tokens), 'rolling' (a rolling KV cache of the last block_size tokens) or 'recompute' (nanoGPT's exact window, recomputed for every token); learned positions always recompute
    sink_tokens: int = 4  # long_context = 'sinks': the first tokens kept in the rolling cache (StreamingLLM's attention sinks)
    interactive: bool = False  # a prompt loop: read a line, stream its continuation, repeat; an empty line or end of input ends it

    def check(self) -> None:
        need(self.dtype in ("auto", "float32", "bfloat16", "float16"), "sample.dtype",
             f"must be 'auto', 'float32', 'bfloat16' or 'float16', got {self.dtype!r}")
        need(self.num_samples >= 1, "sample.num_samples", "must be at least 1")
        need(self.long_context in LONG_CONTEXT, "sample.long_context",
             f"must be one of {', '.join(repr(m) for m in LONG_CONTEXT)}, got {self.long_context!r}")
        need(self.sink_tokens >= 1, "sample.sink_tokens", "must be at least 1 (and below the model's block_size)")
        need(self.max_new_tokens >= 0, "sample.max_new_tokens", "must be 0 or more")
        need(self.temperature >= 0, "sample.temperature", f"must be 0 (greedy) or more, got {self.temperature}")
        need(self.top_k >= 0, "sample.top_k", "must be 0 (off) or more")
        need(0 < self.top_p <= 1, "sample.top_p", f"must be in (0, 1], got {self.top_p}")


@dataclass
class Config(Settings):
    """What a training run reads, and what its run directory keeps (config.toml, the checkpoint)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: GPTConfig = field(default_factory=GPTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
