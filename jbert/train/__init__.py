"""Training stage: prepared datasets -> a model directory in `save_pretrained` format.

    config          TrainConfig: every option, one line of help each; flags, YAML and --help from it
    cli             `main(argv)`: the training command line (train.py, jbert-train)
    loop            `train(config, on_step_end=None)`: set up, load data, build model, loop, finish, for every task
    task_protocol   the Task protocol the loop runs (data, model, evaluate, model-directory files)
    tasks           the tasks there are, and task_for(config): which one --task asks for
    classification  the classification / regression task: labelled data, heads, metrics, predictions, report
    mlm             --task mlm: the masked-LM pretraining task
    mlm_data        whole-word masking over MeCab words, packed or truncated sequences
    dataloaders     the seeded length-grouped sampler, the padding collator, the training DataLoaders
    modeling        pretrained checkpoints or a BERT of a named size from scratch; the run's tokenizer
    optimization    the schedule in optimizer steps, AdamW, the learning-rate schedule
    evaluation      the one evaluator: history, best weights kept, early stopping (every task)
    checkpoint      save_state checkpoints, resume, keep-last-K
    model_writer    the model directory written at the end (shared files + the task's own)
    process_group   inside the training processes: the Accelerator's process group for CPU, DDP, DeepSpeed,
                    FSDP and multi-node, and the one-line message when a peer dies or hangs
    launch          before the processes start: the checked launcher around `accelerate launch`
    deepspeed_config  DeepSpeed JSON checked against the flags, "auto" fields filled
    metrics         accuracy / F1 / regression metrics, best-model selection
    report          model card and plots
    baseline        TF-IDF + logistic regression on the same splits, in every classification report
    thresholds      decision rules chosen on validation: per-label thresholds, abstention (--target_precision)
    recipes         --from_scratch defaults per size, and where every option's value came from
    hp_search       --hp_search N: Optuna trials with pruning, then the final model with the best

Hands on a directory with safetensors weights, a config with the real id2label, the tokenizer,
jbert.json (text settings serving must repeat), metrics.json, predictions, the card and plots.
"""
