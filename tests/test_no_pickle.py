"""Nothing loads pickles: weights come from safetensors, torch.load only with weights_only=True,
and model code from a hub runs only when the user passes --trust_remote_code.

Two kinds of proof. The code is read (ast) so that a new `torch.load` of a path or a hard-wired
`trust_remote_code=True` fails here with its file and line. And the real loading paths (tokenizer,
pretrained model from safetensors and from a legacy pytorch_model.bin, checkpoint save and resume)
run in a subprocess where pickle's loaders and a torch.load without weights_only=True are replaced
by traps: a pickle path taken anywhere, even inside a library that catches the error, fails the test.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


from conftest import REPO_ROOT

SOURCES = sorted((REPO_ROOT / "jbert").rglob("*.py")) + [REPO_ROOT / name for name in ("train.py", "export.py", "serve_onnx.py")]
# from_pretrained of these classes reads ONNX files and JSON, never model code.
NO_CODE_LOADERS = ("ORTOptimizer", "ORTQuantizer", "ORTModel")


def _calls(path: Path):
    """(function node enclosing it or None, call node) for every call in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            enclosing = parents.get(node)
            while enclosing is not None and not isinstance(enclosing, (ast.FunctionDef, ast.AsyncFunctionDef)):
                enclosing = parents.get(enclosing)
            yield enclosing, node


def _keyword(call: ast.Call, name: str):
    return next((keyword.value for keyword in call.keywords if keyword.arg == name), None)


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {ast.unparse(node)[:120]}"


def test_every_torch_load_passes_weights_only_true():
    problems = []
    for path in SOURCES:
        for _, call in _calls(path):
            name = ast.unparse(call.func)
            if name == "torch.load" or name.endswith(".torch.load"):
                value = _keyword(call, "weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    problems.append(_where(path, call))
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "dill.loads",
                        "joblib.load", "cloudpickle.load", "cloudpickle.loads"):
                problems.append(_where(path, call))
            if name in ("np.load", "numpy.load"):
                value = _keyword(call, "allow_pickle")
                if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                    problems.append(_where(path, call))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            # `from torch import load` would hide torch.load calls from the check above.
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle", "dill", "joblib"):
                if any(alias.name in ("load", "loads", "Unpickler") for alias in node.names):
                    problems.append(_where(path, node))
    assert not problems, "pickle-capable loads (use safetensors, or torch.load(..., weights_only=True)):\n" + "\n".join(problems)


def test_trust_remote_code_is_off_unless_the_user_asks():
    from jbert.train.config import TrainConfig

    assert TrainConfig().trust_remote_code is False
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                arguments = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults + node.args.kw_defaults
                for argument, default in zip(arguments, defaults):
                    if argument.arg == "trust_remote_code" and not (isinstance(default, ast.Constant) and default.value is False):
                        problems.append(f"{_where(path, node).split(':')[0]}:{node.lineno}: {node.name}() must default trust_remote_code=False")
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                if isinstance(node.value, ast.Constant) and node.value.value is not False:
                    problems.append(f"{path.relative_to(REPO_ROOT)}:{node.value.lineno}: trust_remote_code={node.value.value!r} hard-wired")
    assert not problems, "\n".join(problems)


def test_every_from_pretrained_passes_the_users_flag():
    """Model/config/tokenizer loads say trust_remote_code explicitly: the user's flag, or False on purpose."""
    problems = []
    for path in SOURCES:
        for function, call in _calls(path):
            func = call.func
            if not (isinstance(func, ast.Attribute) and func.attr == "from_pretrained"):
                continue
            if ast.unparse(func.value).startswith(NO_CODE_LOADERS):
                continue
            value = _keyword(call, "trust_remote_code")
            has_flag = function is not None and any(
                argument.arg == "trust_remote_code" for argument in function.args.args + function.args.kwonlyargs
            )
            if value is None:
                problems.append(_where(path, call) + " (no trust_remote_code: the user's flag is ignored)")
            elif has_flag and not (isinstance(value, ast.Name) and value.id == "trust_remote_code"):
                problems.append(_where(path, call) + " (the function's trust_remote_code is not passed on)")
            elif not (isinstance(value, ast.Constant) and value.value is False) and "trust_remote_code" not in ast.unparse(value):
                problems.append(_where(path, call) + " (trust_remote_code is neither False nor the user's flag)")
    assert not problems, "\n".join(problems)


# The loading paths, run with pickle's loaders trapped. Traps record as well as raise, because some
# libraries catch the exception (Accelerate skips RNG states it cannot load, with an info log).
TRAPPED_SCRIPT = r'''
import io, pickle, random, sys, tempfile
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
import numpy as np
import torch

attempts = []

def _trap(what):
    def trapped(*args, **kwargs):
        attempts.append(what)
        raise AssertionError(what + " was called: a pickle path was taken")
    return trapped

pickle.load, pickle.loads = _trap("pickle.load"), _trap("pickle.loads")
class TrappedUnpickler:
    def __init__(self, *args, **kwargs):
        _trap("pickle.Unpickler")()
pickle.Unpickler = TrappedUnpickler
_torch_load = torch.load
def guarded_torch_load(*args, **kwargs):
    if kwargs.get("weights_only") is not True:
        _trap("torch.load without weights_only=True")()
    return _torch_load(*args, **kwargs)
torch.load = guarded_torch_load

# The traps work: a plain pickle load and torch.load(weights_only=False) are caught.
for load in (lambda: pickle.loads(b"\x80\x04K\x01."), lambda: torch.load(io.BytesIO(), weights_only=False)):
    try:
        load()
    except AssertionError:
        pass
    else:
        raise SystemExit("trap did not fire")
attempts.clear()

from conftest import make_tiny_model_dir
from jbert.tokenization import load_serving_tokenizer, load_tokenizer
from jbert.train.modeling import load_pretrained_model

work = Path(tempfile.mkdtemp())
model_dir = make_tiny_model_dir(work / "model")
load_tokenizer(str(model_dir))
load_serving_tokenizer(model_dir)
load_serving_tokenizer(model_dir, prefer_fast=False)
labels = ["negative", "neutral", "positive"]
model = load_pretrained_model(str(model_dir), labels, "single_label_classification")

# A legacy pytorch_model.bin (pickle format): transformers must read it with weights_only=True.
bin_dir = work / "bin-model"
model.save_pretrained(bin_dir, safe_serialization=False)
(bin_dir / "model.safetensors").unlink(missing_ok=True)
assert (bin_dir / "pytorch_model.bin").is_file()
for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
    (bin_dir / name).write_bytes((model_dir / name).read_bytes())
reloaded = load_pretrained_model(str(bin_dir), labels, "single_label_classification")
assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))

# Checkpoint save and resume through jbert's own functions (Accelerate save_state/load_state).
from accelerate import Accelerator
from jbert.train.checkpoint import TrainerState, load_checkpoint, save_checkpoint

accelerator = Accelerator(cpu=True)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
loss = model(input_ids=torch.tensor([[2, 5, 3]]), labels=torch.tensor([1])).loss
accelerator.backward(loss)
optimizer.step(); scheduler.step(); optimizer.zero_grad()
checkpoint = save_checkpoint(accelerator, TrainerState(global_step=1), work / "checkpoints", keep_last=2)
expected = (random.random(), np.random.rand(), torch.rand(1).item(), [p.detach().clone() for p in model.parameters()])
with torch.no_grad():
    for parameter in model.parameters():
        parameter.add_(1.0)
state = load_checkpoint(accelerator, checkpoint)
assert state.global_step == 1
restored = (random.random(), np.random.rand(), torch.rand(1).item())
assert restored == expected[:3], ("RNG states were not restored", restored, expected[:3])
assert all(torch.equal(a, b) for a, b in zip(expected[3], model.parameters())), "weights not restored"
assert not attempts, attempts
print("no pickle loaded")
'''


def test_loading_paths_take_no_pickle_path():
    script = TRAPPED_SCRIPT.format(root=str(REPO_ROOT), tests=str(REPO_ROOT / "tests"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "no pickle loaded" in result.stdout, result.stdout[-3000:] + result.stderr[-6000:]
