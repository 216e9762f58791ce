"""Training stage: prepared datasets -> a model directory in `save_pretrained` format.

    config        TrainConfig: every option, one line of help each; flags, YAML and --help from it
    loop          `train(config, on_step_end=None)`: set up, load data, build model, loop, finish
    batching      the seeded length-grouped sampler and the padding collator
    modeling      pretrained checkpoints or a BERT of a named size from scratch
    optimization  the schedule in optimizer steps, AdamW, the learning-rate schedule
    evaluation    validation metrics gathered over processes; best weights kept; early stopping
    checkpoint    save_state checkpoints, resume, keep-last-K
    launch        Accelerator set-up for CPU, DDP, DeepSpeed, FSDP and multi-node
    metrics       accuracy / F1 / regression metrics, best-model selection
    model_dir     the model directory written at the end
    report        model card and plots
    baseline      TF-IDF + logistic regression on the same splits, in every classification report
    recipes       --from_scratch defaults per size, and where every option's value came from
    hp_search     --hp_search N: Optuna trials with pruning, then the final model with the best
    mlm           --task mlm: masked-LM pretraining on the same loop stages
    mlm_data      whole-word masking over MeCab words, packed or truncated sequences

Hands on a directory with safetensors weights, a config with the real id2label, the tokenizer,
jbert.json (text settings serving must repeat), metrics.json, predictions, the card and plots.
"""
