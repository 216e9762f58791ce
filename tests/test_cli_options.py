"""Options dataclasses -> flags (jbert.core.cli): both spellings, bool styles, choices, and HF parity.

The "value" style must give train.py the flags transformers.HfArgumentParser gave it: compared
here option string by option string, parse by parse and --help byte for byte on a dataclass that
has every kind of field train's options use.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

import pytest

from jbert.core.cli import add_options, flag_names, hf_argument_parser, option, options_from_args, parse_options


@dataclass
class SwitchOptions:
    """Export/serve style: store_true bools, a --quiet negative flag, positionals."""

    export_dir: str = option(None, "Export directory.", positional=True)
    batch_size: int = option(32, "Texts per call.")
    min_agreement: float = option(0.99, "Smallest agreement, 50% at least.")
    text_column: Optional[str] = option(None, "Column holding the text.", metavar="COLUMN")
    num_threads: Optional[int] = option(None, "Threads.")
    all_scores: bool = option(False, "Add every class's score.")
    reduce_range: Optional[bool] = option(None, "7-bit weights.")
    engine: str = option("local", "local or ray.", choices=("local", "ray"))
    show_progress: bool = option(True, "Progress bar.", negative_flag="--quiet", negative_help="No progress bar.")


@dataclass
class ValueOptions:
    """Train style (HfArgumentParser): bools take values, --no_x for default-True bools, aliases, lists."""

    model_name_or_path: Optional[str] = option(None, "Model id or directory.")
    from_scratch: Optional[str] = option(None, "Size preset.", choices=("tiny", "base"))
    dropout: Optional[float] = option(None, "Dropout override.")
    max_train_steps: Optional[int] = option(None, "Stop after this many steps.")
    learning_rate: float = option(5e-5, "Peak learning rate.")
    strict: bool = option(False, "Fail on empty texts.")
    nfkc: bool = option(True, "Unicode NFKC normalisation.")
    group_by_length: bool = option(True, "Batch similar lengths.")
    tf32: Optional[bool] = option(None, "Allow TF32 matmuls.")
    resume_from_checkpoint: Optional[str] = option(None, "Resume from here.", aliases=["--resume"])
    report_to: list[str] = option(["tensorboard"], "Trackers.")


def _parse(options_class, argv, **kwargs):
    return parse_options(options_class, argv, **kwargs)


def test_flag_names_put_the_field_name_first_and_dashes_second():
    assert flag_names("min_agreement") == ["--min_agreement", "--min-agreement"]
    assert flag_names("port") == ["--port"]


def test_switch_defaults_round_trip_to_the_dataclass_defaults():
    assert _parse(SwitchOptions, ["out"]) == SwitchOptions(export_dir="out")


@pytest.mark.parametrize("spelling", ["underscores", "dashes"])
def test_switch_flags_parse_in_both_spellings(spelling):
    def flag(name):
        return "--" + (name if spelling == "underscores" else name.replace("_", "-"))

    argv = ["out", flag("batch_size"), "8", flag("min_agreement"), "0.5", flag("text_column"), "review",
            flag("num_threads"), "2", flag("all_scores"), flag("reduce_range"), flag("engine"), "ray", "--quiet"]
    assert _parse(SwitchOptions, argv) == SwitchOptions(
        export_dir="out", batch_size=8, min_agreement=0.5, text_column="review", num_threads=2,
        all_scores=True, reduce_range=True, engine="ray", show_progress=False,
    )


def test_switch_bools_take_no_value_and_the_negative_flag_is_the_only_off_switch(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(SwitchOptions, ["out", "--all_scores", "true"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: true" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse(SwitchOptions, ["out", "--show_progress"])
    assert _parse(SwitchOptions, ["out"]).reduce_range is None  # unset stays "not asked", not False


def test_switch_help_shows_defaults_metavars_and_positionals(capsys):
    parser = argparse.ArgumentParser(prog="tool")
    add_options(parser, SwitchOptions)
    text = " ".join(parser.format_help().split())  # argparse wraps lines at the terminal width
    assert "usage: tool [-h]" in text and "EXPORT_DIR" in text
    assert "--batch_size BATCH_SIZE, --batch-size BATCH_SIZE Texts per call. (default: 32)" in text
    assert "Smallest agreement, 50% at least. (default: 0.99)" in text  # a literal % survives
    assert "--text_column COLUMN, --text-column COLUMN Column holding the text." in text
    assert "Column holding the text. (default" not in text  # None defaults say nothing
    assert "--all_scores, --all-scores Add every class's score." in text
    assert "--quiet No progress bar." in text


def test_a_bad_choice_exits_2_and_names_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(SwitchOptions, ["out", "--engine", "spark"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.replace("'", "")  # argparse quotes the choices in some Python versions
    assert "argument --engine: invalid choice: spark (choose from local, ray)" in error


def test_a_bad_number_exits_2_with_a_message(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(SwitchOptions, ["out", "--batch-size", "many"])
    assert exit_info.value.code == 2
    assert "argument --batch_size/--batch-size: invalid int value: 'many'" in capsys.readouterr().err


def test_a_default_true_switch_without_a_negative_flag_is_refused():
    @dataclass
    class Broken:
        truncate: bool = option(True, "Cut long texts.")

    with pytest.raises(TypeError, match="negative_flag"):
        add_options(argparse.ArgumentParser(), Broken)


def test_value_bools_follow_hf_argument_parser():
    assert _parse(ValueOptions, [], bools="value") == ValueOptions()
    parsed = _parse(ValueOptions, ["--strict", "--nfkc", "false", "--no-group-by-length", "--tf32", "yes"], bools="value")
    assert (parsed.strict, parsed.nfkc, parsed.group_by_length, parsed.tf32) == (True, False, False, True)
    assert _parse(ValueOptions, ["--no_nfkc", "--strict", "0"], bools="value").nfkc is False
    assert _parse(ValueOptions, ["--group_by_length", "--strict", "0"], bools="value").strict is False


def test_value_types_aliases_and_lists():
    parsed = _parse(ValueOptions, ["--dropout", "0", "--max-train-steps", "5", "--resume", "latest",
                                   "--report_to", "wandb", "tensorboard", "--learning_rate", "3e-5"], bools="value")
    assert (parsed.dropout, parsed.max_train_steps, parsed.resume_from_checkpoint) == (0.0, 5, "latest")
    assert parsed.report_to == ["wandb", "tensorboard"] and parsed.learning_rate == 3e-5
    assert ValueOptions().report_to is not ValueOptions().report_to  # a list default is per instance


def test_a_bad_bool_value_exits_2_with_a_message(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(ValueOptions, ["--nfkc", "maybe"], bools="value")
    assert exit_info.value.code == 2
    assert "Truthy value expected: got maybe" in capsys.readouterr().err


def test_options_from_args_ignores_other_arguments_and_takes_overrides():
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    add_options(parser, SwitchOptions)
    args = parser.parse_args(["model", "out", "--batch_size", "4"])
    assert options_from_args(SwitchOptions, args, engine="ray") == SwitchOptions(export_dir="out", batch_size=4, engine="ray")


def test_hf_argument_parser_matches_transformers_flag_for_flag():
    """Option strings, parses and --help identical to transformers.HfArgumentParser 4.57."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.HfArgumentParser(ValueOptions, prog="train.py", description="Train.")
    ours = hf_argument_parser(ValueOptions, prog="train.py", description="Train.")
    assert [a.option_strings for a in ours._actions] == [a.option_strings for a in hf._actions]
    assert ours.format_help() == hf.format_help()
    for argv in ([], ["--strict", "--nfkc", "no", "--tf32", "true", "--resume", "x", "--from-scratch", "tiny"],
                 ["--no-nfkc", "--group_by_length", "false", "--dropout", "0.1", "--report-to", "a", "b"]):
        (expected,) = hf.parse_args_into_dataclasses(args=argv)
        assert options_from_args(ValueOptions, ours.parse_args(argv)) == expected, argv
