"""What every stage shares; imports nothing from the other stages and never imports torch.

    errors          UserError (exit 2, a message that says what, where and how to fix it), run_cli
    normalize       the text clean-up applied before tokenisation, in training and in serving
    readers         streaming CSV/TSV/JSONL readers (utf-8, utf-8-sig, cp932) that name bad lines
    file_encodings  which encoding a file is in, and its lines decoded one by one (readers' half)
    artifacts       the contracts between stages: jbert.json, manifest.json, atomic directories
    export_dir      ExportDir: an export directory read once (manifest, settings, labels, model file, columns)
    postprocessing  logits -> probabilities -> decisions (softmax, sigmoid, the decision rule)
    safe_input      outside input read with bounds: JSON that cannot crash, FIFOs and devices refused
    cli             options dataclasses -> argparse flags (`option`, `add_options`), for every CLI
"""
