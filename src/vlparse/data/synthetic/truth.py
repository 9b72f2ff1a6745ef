"""The scene world's ground truth: whether a text is true of a scene, and the scenes of a world.

Pre-training draws its unmatched (ITM label 0) captions from other images, but a caption of another
image can be true of this one: "there is one star" holds for about a fifth of the scenes, "there
are four objects on a checkered background" for one in twenty. On a scene world of seed 0, 6.8 % of
randomly drawn unmatched captions are in fact true descriptions and 0.2 % ambiguous (19 % of the
counting captions; ``reports/2026-11-23-scene-world-negatives/``), so ITM trains and is scored
against wrong labels in those pairs. The world knows its scenes, so it writes them
(``annotations/scenes.json``, named by the manifest's ``generator.scenes``), and
:class:`SceneTruth` lets the pre-training data reject such captions as unmatched texts
(``data.verify_negatives``): :meth:`SceneTruth.negative_filter` gives the collator a plain
``(record index, text) -> bool``, so the core data path knows nothing of the world. Real data sets
have no such oracle; there the captions are drawn as before.

:func:`caption_truth` reads the world's grammar (:mod:`.language`) backwards: the five caption
templates, their fallbacks and the Visual Genome phrases.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .language import NUMBER_WORDS, REL_PHRASES, plural
from .scenes import COLORS, SHAPES, Scene, SceneObject, exists_relation, select

__all__ = [
    "SCENES_FILE", "SceneTruth", "TruthFilter", "caption_truth", "scene_from_json",
    "scene_to_json",
]

#: Where the world writes its scenes, relative to the manifest.
SCENES_FILE = "annotations/scenes.json"

_NUMBERS = {w: i for i, w in enumerate(NUMBER_WORDS)}
_PLURALS = {plural(s): s for s in SHAPES}
_SIZES = ("small", "large")
# every phrasing of a relation (captions say "to the left of", region phrases "left of"), the
# longest first so that "to the left of" is not read as "left of"
_REL_WORDS = sorted({**{v: k for k, v in REL_PHRASES.items()}, **{k: k for k in REL_PHRASES}}
                    .items(), key=lambda kv: -len(kv[0]))
_SCENE = re.compile(r"(?:a picture of |there are )?(\w+) (?:shapes|objects) on a (\w+) background")
_COUNT_ONLY = re.compile(r"(?:an image of |a drawing of )?(\w+) (?:simple )?(?:shapes|objects)")
_BACKGROUND = re.compile(r"(?:a |some shapes on a )(\w+) background(?: with shapes)?")
_COUNT = re.compile(r"there (?:is|are) (\w+) (.+)")


def _description(words: Iterable[str]) -> dict[str, str] | None:
    """Attributes named by a noun phrase (``"the small red circle"``), ``None`` if a word is not
    an article, size, colour, shape or ``object(s)``."""
    desc: dict[str, str] = {}
    for w in words:
        if w in ("a", "an", "the", "object", "objects"):
            continue
        if w in _SIZES:
            desc["size"] = w
        elif w in COLORS:
            desc["color"] = w
        elif w in SHAPES or w in _PLURALS:
            desc["shape"] = _PLURALS.get(w, w)
        else:
            return None
    return desc


def caption_truth(scene: Scene, text: str) -> bool | None:
    """Whether a scene-world text is true of ``scene``.

    Reads every caption template of :func:`~.language.captions` (scene summary, relation, size
    comparison, count, attribute list and the fallbacks) and the Visual Genome phrases of
    :func:`~.language.regions`. Relations follow :func:`~.scenes.exists_relation` ("some X is
    left of some Y"); a definite "the X" is read as "some X".

    Returns:
        ``True`` or ``False``; ``None`` when the relation is ambiguous in the scene (a dead zone
        of :func:`~.scenes.relation`) or the text is not of the world's grammar.
    """
    t = " ".join(text.lower().replace(".", " ").split())
    n = len(scene.objects)
    if m := _SCENE.fullmatch(t):
        return _NUMBERS.get(m[1]) == n and m[2] == scene.background
    if (m := _COUNT_ONLY.fullmatch(t)) and m[1] in _NUMBERS:
        return _NUMBERS[m[1]] == n
    if m := _BACKGROUND.fullmatch(t):
        return m[1] == scene.background
    if (m := _COUNT.fullmatch(t)) and m[1] in _NUMBERS:
        desc = _description(m[2].split())
        return None if not desc else len(select(scene.objects, desc)) == _NUMBERS[m[1]]
    for phrase, rel in _REL_WORDS:
        for sep in (f" is {phrase} ", f" {phrase} "):
            if sep in t:
                left, right = t.split(sep, 1)
                x, y = _description(left.split()), _description(right.split())
                if x and y:
                    return exists_relation(scene, x, rel, y)
    descs = [_description(part.split()) for part in re.split(r", | and ", t)]
    if descs and all(descs):
        return all(select(scene.objects, d) for d in descs)  # type: ignore[arg-type]
    return None


def scene_to_json(scene: Scene) -> dict[str, Any]:
    """The symbolic part of a scene (no background colours or texture seed)."""
    return {"size": scene.size, "background": scene.background,
            "objects": [{"shape": o.shape, "color": o.color, "size": o.size,
                         "cx": o.cx, "cy": o.cy, "r": o.r} for o in scene.objects]}


def scene_from_json(data: dict[str, Any]) -> Scene:
    """A :class:`Scene` from :func:`scene_to_json` (background colours are left grey)."""
    objects = tuple(SceneObject(o["shape"], o["color"], o["size"], float(o["cx"]),
                                float(o["cy"]), float(o["r"])) for o in data["objects"])
    grey = (128, 128, 128)
    return Scene(size=int(data["size"]), objects=objects, background=data["background"],
                 bg_colors=(grey, grey), bg_period=1.0, bg_angle=0.0, bg_seed=0)


class SceneTruth:
    """The scenes of a world by ``(data set, image id)``, to check texts against them.

    Args:
        scenes: rows of ``annotations/scenes.json``: ``{"image_id", "flickr_id", "scene"}``
            (``scene`` as written by :func:`scene_to_json`). COCO, Visual Genome and RefCOCO
            records use ``image_id``; Flickr30K, Flickr30K Entities and SNLI-VE ``flickr_id``.
    """

    _FLICKR_SOURCES = frozenset({"flickr30k", "flickr_entities", "snli_ve"})

    def __init__(self, scenes: list[dict[str, Any]]) -> None:
        self._rows = {int(r["image_id"]): r for r in scenes}
        self._flickr = {int(r["flickr_id"]): int(r["image_id"]) for r in scenes}
        self._cache: dict[int, Scene] = {}

    def __len__(self) -> int:
        return len(self._rows)

    @classmethod
    def from_manifest(cls, manifest: dict) -> SceneTruth | None:
        """The world's scenes named by ``manifest["generator"]["scenes"]`` (an absolute path
        once :func:`~vlparse.data.manifest.load_manifest` has resolved it); ``None`` for a
        manifest without one (real data, or a world written before the file existed)."""
        path = (manifest.get("generator") or {}).get("scenes")
        if not path:
            return None
        return cls(json.loads(Path(path).read_text())["scenes"])

    def scene(self, source: str, image_id: int | str) -> Scene | None:
        """The scene of an image of data set ``source``; ``None`` if the world has none."""
        key = int(image_id)
        if source in self._FLICKR_SOURCES:
            key = self._flickr.get(key, -1)
        if key not in self._cache:
            row = self._rows.get(key)
            if row is None:
                return None
            self._cache[key] = scene_from_json(row["scene"])
        return self._cache[key]

    def holds(self, source: str, image_id: int | str, text: str) -> bool | None:
        """:func:`caption_truth` of ``text`` for that image (``None`` without its scene)."""
        scene = self.scene(source, image_id)
        return None if scene is None else caption_truth(scene, text)

    def negative_filter(self, records: Sequence[Any]) -> TruthFilter:
        """The negative filter of ``records`` (with ``source`` and ``image_id``, e.g.
        :class:`~vlparse.data.formats.records.ImageCaptions`), for
        :class:`~vlparse.data.collate.PretrainCollator`."""
        return TruthFilter(self, [(r.source, r.image_id) for r in records])


class TruthFilter:
    """``(record index, text) -> bool``: whether ``text`` may be true of the record's image (the
    world says it is true, or cannot tell), so that it must not be the image's unmatched caption.

    A class rather than a closure so that it pickles for DataLoader workers.
    """

    def __init__(self, truth: SceneTruth, images: list[tuple[str, int | str]]) -> None:
        self.truth = truth
        self.images = images

    def __call__(self, record: int, text: str) -> bool:
        source, image_id = self.images[record]
        return self.truth.holds(source, image_id, text) is not False
