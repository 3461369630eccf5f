"""The internals the scripts at the top of the repository are built from, one module per concern.

The scripts (train.py, sample.py, prepare.py, eval.py, export.py, plot.py) are each a command line
plus one call into this package; ``model.py`` (the GPT, torch only) stays beside them, and this
package imports it, never a script.  ``tools/`` measures all of it and is never imported here.

Settings and the command line
    cli          the command line every script shares: TOML + --section.key=value, --help, exit code 2
    config       a run's sections ([data], [model], [train], [sample]) and their defaults: the one home
    recipes      measured recipes: what a run changes with its time budget (train.budget_rule)
    errors       the one error a user sees (one line, exit code 2)
Data
    corpus       data.source resolved to documents: files, directories, globs, URLs, the standard library
    formats      one reader per format (text, gzip/zstd, JSON Lines, JSON, Parquet) and the one place that picks it
    shards       llm.c / modded-nanogpt GPT-2 token shards, copied into a dataset without re-tokenizing
    encoding     text to tokens in blocks, streaming and in parallel
    tokenizer    bytes, a BPE trained on the corpus (tiktoken's rank format), tiktoken's encodings
    pipeline     the preparation pipeline: split, tokenizer, encode, commit
    dataset      a prepared dataset, read (memory-mapped token files, meta.json)
Training
    trainer      a run: run directory, evaluation, metrics, checkpoints, resume, Ctrl-C
    step         one optimizer step (what tools/bench times)
    batches      the windows of a step, a pure function of (seed, step, micro-batch)
    optim        AdamW, Muon, the schedules
    distributed  torchrun: ranks, devices, the collectives training needs
    speed        compile and precision chosen by measurement
    hardware     device, number format, peak FLOP/s
    checkpoint   the checkpoint format: atomic writes, weights_only loading, resume checks
    safefiles    atomic files and directories, temporary names, locks
    loggers      metrics.jsonl, TensorBoard and W&B
    curves       metrics.jsonl read back, and what a validation curve says
Using a model
    generation   sampling I/O: prompts, streaming, UTF-8, the interactive loop
    evaluation   what eval.py measures (eval.task): bits per byte of any model on any text
    hellaswag    HellaSwag: its items read and checked, four endings scored, acc and acc_norm
    ensemble     several models as one; distillation from them
    pretrained   a model that already exists (train.init_from, eval.checkpoint)
    hf           Hugging Face: GPT-2 in, any exportable model out, tokenizer.json
    plots        runs as pictures (matplotlib, optional)
"""
