"""Benchmark: `wit filter --blur-faces`' face detector (wit/filter/faces.py: Haar `alt`
frontal + profile both ways) against OpenCV's tutorial detector (histogram equalisation,
the `default` frontal cascade, detectMultiScale's defaults), on one core, on real photos
found offline in installed packages:

- lfw: scikit-image's `lfw_subset`, 100 faces and 100 non-faces (25 px, grey), enlarged
  to 96 px on a 144 px canvas (edges repeated);
- scenes: the same faces and non-faces pasted at 28-64 px into 320x240 crops of the
  no-face photos below (seeded), one each;
- portraits: scikit-image's astronaut and cameraman (a profile), matplotlib's Grace
  Hopper, at scales 1, 1/2 and 1/4, and mirrored (18 images, faces 23-230 px);
- no-face photos: scikit-learn's china and flower, scikit-image's coffee, chelsea (a cat),
  rocket, horse, coins, hubble_deep_field, brick, grass, gravel, retina, ihc, moon, page,
  text, colorwheel and a motorcycle, each whole and its four quarters enlarged 2x (90).

Recall: the share of face images with a box on the face (IoU > 0.2 with the known box);
false-positive rate (FPR): the share of no-face images with any box, and of face images
with a box elsewhere. Speed: images/s/core of the detectors on the portraits and no-face
photos (detection alone, the same images for both), and of the whole `blur_faces` (decode,
detect, blur, re-encode) on their JPEGs.

    python tests/bench/bench_faces.py
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from wit.filter import faces  # noqa: E402

NO_FACE = ("coffee", "chelsea", "rocket", "horse", "coins", "hubble_deep_field", "brick", "grass", "gravel",
           "retina", "immunohistochemistry", "moon", "page", "text", "colorwheel")
PORTRAITS = {"astronaut": [177, 67, 93, 93], "grace_hopper": [155, 105, 220, 220], "camera": [165, 80, 105, 115]}


def grey(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8:
        a = (a * 255).astype(np.uint8) if a.dtype == bool or a.max() <= 1 else a.astype(np.uint8)
    return a if a.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2GRAY)


def no_face_photos() -> dict[str, np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {name: grey(a) for name, a in zip(("china", "flower"), load_sample_images().images)}
    photos.update({name: grey(getattr(skimage.data, name)()) for name in NO_FACE})
    photos["motorcycle"] = grey(skimage.data.stereo_motorcycle()[0])
    return photos


def portraits() -> list[tuple[str, np.ndarray, list[int]]]:
    import matplotlib
    import skimage.data
    from PIL import Image

    hopper = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    images = {"astronaut": grey(skimage.data.astronaut()), "grace_hopper": grey(np.asarray(hopper)),
              "camera": skimage.data.camera()}
    out = []
    for name, image in images.items():
        for scale in (1.0, 0.5, 0.25):
            scaled = image if scale == 1 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            box = [round(v * scale) for v in PORTRAITS[name]]
            out.append((f"{name}@{scale}", scaled, box))
            mirrored = [scaled.shape[1] - box[0] - box[2], *box[1:]]
            out.append((f"{name}@{scale} mirrored", np.ascontiguousarray(scaled[:, ::-1]), mirrored))
    return out


def lfw_sets(photos: dict[str, np.ndarray]) -> dict[str, list[tuple[np.ndarray, list[int] | None]]]:
    """(image, face box or None) lists: lfw faces and non-faces, and both pasted into scenes."""
    import skimage.data

    data = (skimage.data.lfw_subset() * 255).astype(np.uint8)
    big = [cv2.copyMakeBorder(cv2.resize(a, (96, 96), interpolation=cv2.INTER_CUBIC), 24, 24, 24, 24,
                              cv2.BORDER_REPLICATE) for a in data]
    rng = np.random.default_rng(0)
    backgrounds = [photos[n] for n in ("china", "flower", "coffee", "chelsea", "rocket", "horse", "hubble_deep_field",
                                       "brick", "grass", "gravel")]
    scenes = []
    for a in data:
        bg = backgrounds[rng.integers(len(backgrounds))]
        y, x = rng.integers(0, bg.shape[0] - 240), rng.integers(0, bg.shape[1] - 320)
        scene = bg[y:y + 240, x:x + 320].copy()
        s = int(rng.integers(28, 65))
        px, py = int(rng.integers(0, 320 - s)), int(rng.integers(0, 240 - s))
        scene[py:py + s, px:px + s] = cv2.resize(a, (s, s), interpolation=cv2.INTER_CUBIC)
        scenes.append((scene, [px, py, s, s]))
    return {"lfw faces": [(b, [24, 24, 96, 96]) for b in big[:100]], "lfw non-faces": [(b, None) for b in big[100:]],
            "scene faces": scenes[:100], "scene non-faces": [(s, None) for s, _ in scenes[100:]]}


def iou(a: list[int], b: list[int]) -> float:
    w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h / (a[2] * a[3] + b[2] * b[3] - w * h)


def tutorial_detector():
    """OpenCV's cascade classifier tutorial: equalizeHist, haarcascade_frontalface_default,
    detectMultiScale with its defaults (scale 1.1, 3 neighbours)."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    return lambda gray: [list(map(int, b)) for b in cascade.detectMultiScale(cv2.equalizeHist(gray))]


def score(detect, sets: dict[str, list[tuple[np.ndarray, list[int] | None]]]) -> dict[str, dict]:
    """Per set: recall and stray-box rate (face sets) or FPR (no-face sets), and images."""
    out = {}
    for name, items in sets.items():
        found = [(detect(image), box) for image, box in items]
        if items[0][1] is None:
            out[name] = {"images": len(items), "fpr": sum(bool(boxes) for boxes, _ in found) / len(items)}
        else:
            out[name] = {"images": len(items),
                         "recall": sum(any(iou(b, box) > 0.2 for b in boxes) for boxes, box in found) / len(items),
                         "fpr": sum(any(iou(b, box) <= 0.2 for b in boxes) for boxes, box in found) / len(items)}
    return out


def rate(run, images: list, repeats: int = 2) -> float:
    """Images/s, best of `repeats` passes."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for image in images:
            run(image)
        best = min(best, time.perf_counter() - started)
    return len(images) / best


def main() -> None:
    from PIL import Image

    cv2.setNumThreads(1)
    photos = no_face_photos()
    quarters = {}
    for name, a in photos.items():
        h, w = a.shape
        for i, (y, x) in enumerate([(0, 0), (0, w // 2), (h // 2, 0), (h // 2, w // 2)]):
            quarters[f"{name} q{i}"] = cv2.resize(a[y:y + h // 2, x:x + w // 2], (w // 2 * 2, h // 2 * 2),
                                                  interpolation=cv2.INTER_CUBIC)
    people = portraits()
    sets = {**lfw_sets(photos), "portraits": [(image, box) for _, image, box in people],
            "no-face photos": [(a, None) for a in [*photos.values(), *quarters.values()]]}
    detectors = {"wit": faces.detect, "tutorial": tutorial_detector()}
    scores = {name: score(detect, sets) for name, detect in detectors.items()}

    real = [image for _, image, _ in people[::2]] + list(photos.values())   # 9 portraits + 18 photos, unmirrored
    megapixels = sum(a.size for a in real) / 1e6 / len(real)
    speed = {name: rate(detect, real) for name, detect in detectors.items()}
    jpegs = []
    for a in real:
        buffer = io.BytesIO()
        Image.fromarray(a).convert("RGB").save(buffer, "JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    whole = rate(faces.blur_faces, jpegs)

    print(f"{'set':<16} {'images':>6}  " + "  ".join(f"{n + ' recall':>15} {n + ' FPR':>12}" for n in detectors))
    for name in sets:
        cells = []
        for detector in detectors:
            s = scores[detector][name]
            cells.append(f"{s['recall']:>15.2f} {s['fpr']:>12.2f}" if "recall" in s else f"{'':>15} {s['fpr']:>12.2f}")
        print(f"{name:<16} {scores['wit'][name]['images']:>6}  " + "  ".join(cells))
    missed = [n for (n, image, box) in people if not any(iou(b, box) > 0.2 for b in faces.detect(image))]
    print(f"portraits wit missed: {missed or 'none'}")
    print(f"speed, {len(real)} real photos ({megapixels:.2f} MP on average), one core: detection wit "
          f"{speed['wit']:.1f} images/s, tutorial {speed['tutorial']:.1f} images/s "
          f"({speed['wit'] / speed['tutorial']:.2f}x); whole blur_faces on their JPEGs {whole:.1f} images/s")

    face_sets = ("lfw faces", "scene faces", "portraits")
    no_face_sets = ("lfw non-faces", "scene non-faces", "no-face photos")
    recall = {d: sum(scores[d][s]["recall"] * scores[d][s]["images"] for s in face_sets)
              / sum(scores[d][s]["images"] for s in face_sets) for d in detectors}
    fpr = {d: sum(scores[d][s]["fpr"] * scores[d][s]["images"] for s in no_face_sets)
           / sum(scores[d][s]["images"] for s in no_face_sets) for d in detectors}
    print(json.dumps({
        "bench": "faces", "metric": "images/s/core (face detection, real photos)",
        "baseline": round(speed["tutorial"], 2), "wit": round(speed["wit"], 2),
        "ratio": round(speed["wit"] / speed["tutorial"], 3),
        "target_text": "recall ≥ 0.95, no-face FPR ≤ 0.05", "met": recall["wit"] >= 0.95 and fpr["wit"] <= 0.05,
        "recall": round(recall["wit"], 3), "fpr": round(fpr["wit"], 3),
        "baseline_recall": round(recall["tutorial"], 3), "baseline_fpr": round(fpr["tutorial"], 3),
        "recall_by_set": {s: round(scores["wit"][s]["recall"], 3) for s in face_sets},
        "fpr_by_set": {s: round(scores["wit"][s]["fpr"], 3) for s in no_face_sets},
        "blur_faces_images_per_s": round(whole, 2), "megapixels": round(megapixels, 3),
        "cpu": os.cpu_count()}))


if __name__ == "__main__":
    main()
