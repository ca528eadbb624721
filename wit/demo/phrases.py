"""What the demo world says about its scenes, in English, Japanese and Chinese: captions in
several phrasings, zero-shot class names and prompt templates. Japanese and Chinese are
written without spaces, so they exercise word segmentation, MetaCLIP 2's unpadded CJK
matching and a multilingual tokenizer.

Every caption is a true description of its scene: colour, shape, and (usually) the number
of objects and where they are."""

from __future__ import annotations

import random

LANGUAGES = ("en", "ja", "zh")
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
POSITION_PHRASES = {
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "centre": ("in the centre", "in the middle"),
}

# Japanese and Chinese (simplified) words, per English word: a colour as it stands before
# a noun (ja: adjective, or noun + の), shape nouns, counters, places.
_COLOURS = {"red": ("赤い", "红色"), "orange": ("オレンジ色の", "橙色"), "yellow": ("黄色い", "黄色"),
            "green": ("緑色の", "绿色"), "blue": ("青い", "蓝色"), "purple": ("紫色の", "紫色"),
            "black": ("黒い", "黑色")}
_SHAPES = {"circle": ("円", "圆形"), "square": ("正方形", "正方形"), "triangle": ("三角形", "三角形"),
           "star": ("星", "星形"), "cross": ("十字", "十字"), "ring": ("輪", "圆环"), "diamond": ("菱形", "菱形")}
_NUMBERS = {1: ("一つ", "一个"), 2: ("二つ", "两个"), 3: ("三つ", "三个"), 4: ("四つ", "四个")}
_PLACES = {"left": (("左側に", "左に"), ("左边", "左侧")), "right": (("右側に", "右に"), ("右边", "右侧")),
           "top": (("上の方に", "上部に"), ("上方", "上面")), "bottom": (("下の方に", "下部に"), ("下方", "下面")),
           "centre": (("中央に", "真ん中に"), ("中间", "中央"))}
JA_COLOURS, ZH_COLOURS = ({k: v[i] for k, v in _COLOURS.items()} for i in (0, 1))
JA_SHAPES, ZH_SHAPES = ({k: v[i] for k, v in _SHAPES.items()} for i in (0, 1))
JA_NUMBERS, ZH_NUMBERS = ({k: v[i] for k, v in _NUMBERS.items()} for i in (0, 1))
JA_PLACES, ZH_PLACES = ({k: v[i] for k, v in _PLACES.items()} for i in (0, 1))

TEMPLATES = {   # zero-shot prompts, "{}" the class name
    "en": ("a photo of a {}.", "a drawing of a {}.", "a picture of a {}.", "an image of a {}.", "a {}.",
           "a {} on a plain background."),
    "ja": ("{}の写真。", "{}の絵。", "{}の画像。", "{}のイラスト。", "{}。", "無地の背景に{}。"),
    "zh": ("一张{}的照片。", "一幅{}的图画。", "一张{}的图片。", "{}的图像。", "一个{}。", "纯色背景上的一个{}。"),
}


def caption(rng: random.Random, lang: str, shape: str, colour: str, count: int, position: str | None) -> str:
    """A true description of the scene in `lang`, in one of several phrasings."""
    if lang == "en":
        return _english(rng, shape, colour, count, position)
    if lang == "ja":
        return _japanese(rng, shape, colour, count, position)
    if lang == "zh":
        return _chinese(rng, shape, colour, count, position)
    raise ValueError(f"the demo world speaks {', '.join(LANGUAGES)}, not {lang!r}")


def class_name(name: str, lang: str) -> str:
    """The zero-shot class name of "<colour> <shape>" in `lang` ("red circle" -> "赤い円", "红色圆形")."""
    colour, shape = name.split()
    if lang == "en":
        return name
    if lang == "ja":
        return JA_COLOURS[colour] + JA_SHAPES[shape]
    if lang == "zh":
        return ZH_COLOURS[colour] + "的" + ZH_SHAPES[shape]
    raise ValueError(f"the demo world speaks {', '.join(LANGUAGES)}, not {lang!r}")


def _english(rng: random.Random, shape: str, colour: str, count: int, position: str | None) -> str:
    if count == 1:
        forms = [f"{_article(colour)} {colour} {shape}"] * 3 + [
            f"one {colour} {shape}", f"a single {colour} {shape}", f"{_article(shape)} {shape} in {colour}"]
    else:
        plural = shape + ("es" if shape.endswith(("s", "x", "ch", "sh")) else "s")
        number = NUMBERS[count]
        forms = [f"{number} {colour} {plural}"] * 3 + [f"{number} {plural} in {colour}"]
    phrase = rng.choice(forms)
    where = rng.choice(POSITION_PHRASES[position]) if position and rng.random() < 0.8 else None
    if where:
        phrase = f"{phrase} {where}"
    frames = ["{}", "{}", "a photo of {}", "a picture of {}", "an image of {}", "a drawing of {}",
              ("there is {}" if count == 1 else "there are {}")]
    if not where:
        frames.append("{} on a plain background")
    text = rng.choice(frames).format(phrase)
    return text + "." if rng.random() < 0.3 else text


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _japanese(rng: random.Random, shape: str, colour: str, count: int, position: str | None) -> str:
    thing = JA_COLOURS[colour] + JA_SHAPES[shape]
    number = JA_NUMBERS[count]
    where = rng.choice(JA_PLACES[position]) if position and rng.random() < 0.8 else ""
    if rng.random() < 0.25:   # a sentence
        text = f"{where}{thing}が{number}あります"
    else:                     # a noun phrase, perhaps framed
        forms = [f"{where}{number}の{thing}", f"{where}{thing}が{number}"]
        if count == 1:
            forms += [f"{where}{thing}"] * 2 + [f"{where}一つだけの{thing}"]
        frames = ["{}", "{}", "{}の写真", "{}の絵", "{}の画像", "{}のイラスト"]
        if not where:
            frames.append("無地の背景に{}")
        text = rng.choice(frames).format(rng.choice(forms))
    return text + "。" if rng.random() < 0.3 else text


def _chinese(rng: random.Random, shape: str, colour: str, count: int, position: str | None) -> str:
    thing = ZH_COLOURS[colour] + rng.choice(("的", "")) + ZH_SHAPES[shape]
    number = ZH_NUMBERS[count]
    where = rng.choice(ZH_PLACES[position]) if position and rng.random() < 0.8 else ""
    forms = [f"{number}{thing}"] * 2 + ([f"{where}有{number}{thing}", f"{number}{thing}在{where}"] if where else [])
    if count == 1:
        forms.append(f"只有一个{thing}")
    phrase = rng.choice(forms)
    frames = ["{}", "{}", "{}的照片", "一张{}的图片", "一幅{}的图画", "这是{}"]
    if not where:
        frames.append("纯色背景上的{}")
    text = rng.choice(frames).format(phrase)
    return text + "。" if rng.random() < 0.3 else text
