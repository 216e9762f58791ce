"""Text clean-up shared by training and serving: each step does its job and can be switched off."""

from __future__ import annotations

import pytest

from jbert.core.normalize import NormalizationConfig, normalize_text

ALL = NormalizationConfig()
NONE = NormalizationConfig(nfkc=False, remove_control=False, normalize_whitespace=False)
ONLY_NFKC = NormalizationConfig(nfkc=True, remove_control=False, normalize_whitespace=False)
ONLY_CONTROL = NormalizationConfig(nfkc=False, remove_control=True, normalize_whitespace=False)
ONLY_WHITESPACE = NormalizationConfig(nfkc=False, remove_control=False, normalize_whitespace=True)


@pytest.mark.parametrize("raw,expected", [
    ("価格は１，９８０円", "価格は1,980円"),  # full-width digits and comma
    ("ＡＢＣａｂｃ！？", "ABCabc!?"),  # full-width Latin letters and punctuation
    ("ｻｲｺｰでした", "サイコーでした"),  # half-width katakana with prolonged sound mark
    ("ﾊﾟﾝとﾋﾞｰﾙ", "パンとビール"),  # half-width voiced/semi-voiced marks combine
    ("①②", "12"),  # circled digits
    ("㈱と㍻", "(株)と平成"),  # compatibility ideographs
])
def test_nfkc(raw, expected):
    assert normalize_text(raw, ONLY_NFKC) == expected
    assert normalize_text(raw, ONLY_CONTROL) == raw  # untouched when NFKC is off


def test_nfkc_turns_ideographic_space_into_a_space_but_keeps_line_breaks():
    assert normalize_text("良い\u3000商品\n", ONLY_NFKC) == "良い 商品\n"


@pytest.mark.parametrize("raw,expected", [
    ("良い\n商品", "良い 商品"),
    ("良い\r\n商品", "良い 商品"),
    ("良い\t\t商品", "良い 商品"),
    ("良い\u3000商品", "良い 商品"),
    ("  前後の空白  ", "前後の空白"),
    ("連続   する　\u3000空白", "連続 する 空白"),
    ("改行\n\n\nだけ\r", "改行 だけ"),
    ("ノーブレーク\u00a0スペース", "ノーブレーク スペース"),
    ("ゼロ幅\u200bスペース", "ゼロ幅 スペース"),
])
def test_whitespace(raw, expected):
    assert normalize_text(raw, ONLY_WHITESPACE) == expected
    assert normalize_text(raw, NONE) == raw


@pytest.mark.parametrize("raw,expected", [
    ("\ufeff先頭にBOM", "先頭にBOM"),
    ("NUL\x00文字", "NUL文字"),
    ("ベル\x07と削除\x7f", "ベルと削除"),
    ("右から左\u200fマーク", "右から左マーク"),
    ("ソフト\u00adハイフン", "ソフトハイフン"),
    ("改行\nとタブ\tは残す", "改行\nとタブ\tは残す"),  # whitespace is the whitespace step's job
])
def test_control_and_format_characters(raw, expected):
    assert normalize_text(raw, ONLY_CONTROL) == expected
    assert normalize_text(raw, NONE) == raw


@pytest.mark.parametrize("emoji", ["😊", "👍🏽", "👨\u200d👩\u200d👧", "🇯🇵", "❤️"])
def test_emoji_survive_every_step(emoji):
    text = f"最高でした{emoji}"
    cleaned = normalize_text(text, ALL)
    # ZWJ (a format char) is kept on purpose and the variation selector of ❤️ is a mark: sequences stay whole
    assert cleaned == text


def test_all_steps_together():
    raw = "\ufeff  ３日で届きました。\r\nｻｲｺｰ\u3000です😊\x00\t "
    assert normalize_text(raw, ALL) == "3日で届きました。 サイコー です😊"
    assert normalize_text(raw) == normalize_text(raw, ALL)  # the default config runs every step


def test_idempotent():
    raw = "ＡＢＣ\u3000ｶﾅ\n\x00😊"
    once = normalize_text(raw, ALL)
    assert normalize_text(once, ALL) == once


def test_config_round_trip_ignores_unknown_keys():
    config = NormalizationConfig(nfkc=False, remove_control=True, normalize_whitespace=False)
    assert NormalizationConfig.from_dict(config.to_dict()) == config
    assert NormalizationConfig.from_dict({"nfkc": False, "added_in_a_newer_version": True}) == NormalizationConfig(nfkc=False)
    assert NormalizationConfig.from_dict(None) == NormalizationConfig()
