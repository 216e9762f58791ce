"""Training stage: prepared datasets -> a model directory in `save_pretrained` format.

    config      TrainConfig: every option, one line of help each; flags, YAML and --help from it
    modeling    pretrained checkpoints or a BERT of a named size from scratch
    loop        the Accelerate training loop, `train(config)`
    checkpoint  save_state checkpoints, resume, keep-last-K
    launch      Accelerator set-up for CPU, DDP, DeepSpeed, FSDP and multi-node
    metrics     accuracy / F1 / regression metrics, best-model selection
    report      model card and plots

Hands on a directory with safetensors weights, a config with the real id2label, the tokenizer,
jbert.json (text settings serving must repeat), metrics.json, predictions, the card and plots.
"""
