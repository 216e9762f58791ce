"""Test-only fault points for the real processes of tests/test_faults_*.py and bench/fault_drills.py.

Python imports `sitecustomize` at start-up from sys.path; the fault tests put this directory first on
PYTHONPATH of the processes they start, so production code carries no hook. Without JBERT_FAULT set
it does nothing.

JBERT_FAULT=<point>:<n> stops the process at that point: it writes the file named by
JBERT_FAULT_MARKER (the test waits for it) and then sleeps until the test kills it with SIGKILL.
    step:N          at the start of this process's N-th optimizer step (steps before it applied)
    checkpoint:N    inside the save of checkpoint step N: model.safetensors written, then torn to half
                    its size, optimizer and RNG states not yet written
    commit:N        checkpoint step N completely written, trainer_state.json included, not yet published
    prune:N         while deleting the N-th old checkpoint of this process, one of its files already gone
    model_dir:N     the N-th model directory fully assembled in its temporary directory, not yet renamed
    vocabulary:N    --from_scratch: the N-th trained vocabulary's vocab.txt written, its tokenizer files not yet
    rank:R          (combined with the above, e.g. "rank:1,step:3") only the process of global rank R stops
JBERT_FAULT_FSIZE_IN_MODEL_DIR=<bytes> instead sets a real file-size limit (RLIMIT_FSIZE, what
`ulimit -f` sets) at the moment the model directory starts being assembled.
"""

import os


def _install() -> None:
    import contextlib
    import re
    import shutil
    import time

    spec = dict(item.rsplit(":", 1) for item in os.environ.get("JBERT_FAULT", "").split(",") if item)
    if "rank" in spec and os.environ.get("RANK", "0") != spec.pop("rank"):
        spec = {}
    marker = os.environ.get("JBERT_FAULT_MARKER")

    def stop_here(what: str) -> None:
        if marker:
            with open(marker + ".tmp", "w", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {what}\n")
            os.replace(marker + ".tmp", marker)
        while True:  # until the test's SIGKILL
            time.sleep(60)

    if "step" in spec:
        from accelerate.optimizer import AcceleratedOptimizer

        original_step, target, taken = AcceleratedOptimizer.step, int(spec["step"]), [0]

        def step(self, *args, **kwargs):
            if self.gradient_state.sync_gradients:
                taken[0] += 1
                if taken[0] == target:
                    stop_here(f"step {target}")
            return original_step(self, *args, **kwargs)

        AcceleratedOptimizer.step = step

    if "checkpoint" in spec:
        import accelerate.checkpointing as checkpointing

        original_save, partial = checkpointing.save, f".partial_step_{int(spec['checkpoint']):08d}"

        def save(obj, f, *args, **kwargs):
            original_save(obj, f, *args, **kwargs)
            path = str(f)
            if partial in path and path.endswith("model.safetensors"):
                with open(path, "r+b") as handle:
                    handle.truncate(os.path.getsize(path) // 2)  # a torn write
                stop_here(f"checkpoint {path}")

        checkpointing.save = save

    if "commit" in spec:
        from jbert.train import checkpoint

        original_state_save, partial = checkpoint.TrainerState.save, f".partial_step_{int(spec['commit']):08d}"

        def state_save(self, directory):
            original_state_save(self, directory)
            if os.path.basename(str(directory)) == partial:
                stop_here(f"commit {directory}")

        checkpoint.TrainerState.save = state_save

    if "prune" in spec:
        original_rmtree, target, seen = shutil.rmtree, int(spec["prune"]), [0]
        checkpoint_name = re.compile(r"^(\.deleting_)?step_\d+$")

        def rmtree(path, *args, **kwargs):
            if checkpoint_name.match(os.path.basename(str(path))) and os.path.isdir(path):
                seen[0] += 1
                if seen[0] == target:
                    os.remove(os.path.join(path, "model.safetensors"))
                    stop_here(f"prune {path}")
            return original_rmtree(path, *args, **kwargs)

        shutil.rmtree = rmtree

    if "vocabulary" in spec:
        # The class itself, not the name: transformers' lazy module re-binds its public names.
        from transformers.models.bert_japanese.tokenization_bert_japanese import BertJapaneseTokenizer

        target, built, original_init = int(spec["vocabulary"]), [0], BertJapaneseTokenizer.__init__

        def __init__(self, *args, **kwargs):
            # train_japanese_wordpiece builds the tokenizer from its fresh vocab.txt, then saves the rest.
            vocab_file = kwargs.get("vocab_file") or (args[0] if args else None)
            directory = os.path.dirname(str(vocab_file))
            if vocab_file and not os.path.exists(os.path.join(directory, "tokenizer_config.json")):
                built[0] += 1
                if built[0] == target:
                    stop_here(f"vocabulary {directory}")
            original_init(self, *args, **kwargs)

        BertJapaneseTokenizer.__init__ = __init__

    limit = os.environ.get("JBERT_FAULT_FSIZE_IN_MODEL_DIR")
    if "model_dir" in spec or limit:
        # jbert.train.model_writer binds atomic_directory when it is imported, after this runs; the tasks
        # look write_model_card up on jbert.train.report when they write the card.
        from jbert.core import artifacts
        from jbert.train import report

        if "model_dir" in spec:
            original_card, target, written = report.write_model_card, int(spec["model_dir"]), [0]

            def write_model_card(directory, *args, **kwargs):
                original_card(directory, *args, **kwargs)  # the last file of the model directory
                written[0] += 1
                if written[0] == target:
                    stop_here(f"model_dir {directory}")

            report.write_model_card = write_model_card

        if limit:
            import resource

            original_atomic = artifacts.atomic_directory

            @contextlib.contextmanager
            def atomic_directory(final_path, *args, **kwargs):
                with original_atomic(final_path, *args, **kwargs) as tmp_dir:
                    # Not for the run's working copy of the best weights (<output_dir>.checkpoints/best).
                    if not os.path.dirname(os.path.abspath(final_path)).endswith(".checkpoints"):
                        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
                        resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), hard))
                    yield tmp_dir

            artifacts.atomic_directory = atomic_directory


if os.environ.get("JBERT_FAULT") or os.environ.get("JBERT_FAULT_FSIZE_IN_MODEL_DIR"):
    _install()
