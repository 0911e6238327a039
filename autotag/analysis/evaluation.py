"""Labelled clips + prompt sets (name | configured | templates) → clip scores per set → top-k
accuracy, per-tag precision / recall / AP, mAP, confusions → `Evaluation`.

The figures `autotag eval` prints and the HTML report shows. Three prompt sets are compared side
by side: the tag's name alone, the config's prompts (what tagging uses), and the name in each
template (a prompt ensemble). A set's tag vectors are float32 [n_tags, 512], each the mean of
its prompts' text embeddings, as vocabulary.build_vocabulary computes them; everything after
the text embeddings is numpy (metrics.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autotag.analysis.labelling import EvalError, Labelled
from autotag.analysis.metrics import (
    Confusion,
    Matrix,
    average_precision,
    clip_scores,
    confusion_matrix,
    confusions,
    given_tags,
    top_k_accuracy,
)
from autotag.config import TaggingConfig, VocabEntry
from autotag.model import Embedder
from autotag.vocabulary import embed_texts, normalise_prompt, text_cache

TOP_K = 5  # top-k accuracy's k (capped at the vocabulary's size)
MAX_CONFUSIONS = 10  # confusion pairs listed, most costly first
BETTER_BY = 0.02  # AP by which one prompt must beat its ensemble to be pointed out
# Prompt templates for the "templates" prompt set: a tag's name in each, embeddings averaged.
# MIL-NCE learnt from narrated videos (HowTo100M), so plain descriptions of someone doing
# something suit it better than CLIP's "a photo of".
DEFAULT_TEMPLATES = ("{}", "a person {}", "someone {}", "people {}")
PROMPT_SETS = ("name", "configured", "templates")  # compared side by side; "configured" is
#                                                     what tagging uses

PromptSets = dict[str, tuple[tuple[str, ...], ...]]  # set name → its prompts per tag


# -- prompts --------------------------------------------------------------------------------------

def check_templates(templates: Sequence[str]) -> None:
    """EvalError unless every template has a '{}' for the tag's name."""
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise EvalError(f"template {bad[0]!r} has no '{{}}' for the tag's name; "
                        "write e.g. --template 'a person {}'")


def prompt_sets(entries: Sequence[VocabEntry], templates: Sequence[str] = DEFAULT_TEMPLATES
                ) -> PromptSets:
    """Each prompt set → its prompts per tag (normalised as tagging normalises them):
    name: the tag's name alone; configured: the config's prompts (what tagging uses);
    templates: the tag's name in each template, a prompt ensemble."""
    return {
        "name": tuple((normalise_prompt(e.label),) for e in entries),
        "configured": tuple(tuple(dict.fromkeys(normalise_prompt(p) for p in e.prompts))
                            for e in entries),
        "templates": tuple(tuple(dict.fromkeys(normalise_prompt(t.replace("{}", e.label))
                                               for t in templates)) for e in entries),
    }


def embed_prompts(sets: PromptSets, embedder: Embedder,
                  cache_dir: Path | None) -> dict[str, np.ndarray]:
    """Every prompt of every set, and "" → float32 [512], through the vocabulary's text cache."""
    texts = sorted({p for per_tag in sets.values() for prompts in per_tag for p in prompts} | {""})
    return embed_texts(texts, embedder, text_cache(cache_dir, embedder))


def set_vectors(prompts: Sequence[Sequence[str]], table: dict[str, np.ndarray]) -> np.ndarray:
    """Prompts per tag → float32 [n_tags, 512], each tag the mean of its prompts (as
    vocabulary.build_vocabulary computes it)."""
    return np.stack([np.mean([table[p] for p in per_tag], axis=0)
                     for per_tag in prompts]).astype(np.float32)


def unknown_prompts(prompts: Iterable[str], table: dict[str, np.ndarray]) -> tuple[str, ...]:
    """Prompts the model knows no word of: they embed like the empty string."""
    return tuple(p for p in dict.fromkeys(prompts)
                 if p and np.allclose(table[p], table[""], atol=1e-6))


# -- results --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TagResult:
    label: str
    clips: int  # clips labelled with the tag
    threshold: float  # its tagging threshold (tagging.thresholds, else min_score)
    given: int  # clips tagging gives it to
    correct: int  # of those, clips labelled with it
    ap: float  # with the configured prompts
    prompt_ap: dict[str, float] = field(default_factory=dict)  # each prompt of an ensemble alone

    @property
    def precision(self) -> float | None:
        return self.correct / self.given if self.given else None

    @property
    def better_prompts(self) -> dict[str, float]:
        """Prompts of the ensemble that alone rank the tag's clips better than the ensemble."""
        return {p: ap for p, ap in self.prompt_ap.items() if ap > self.ap + BETTER_BY}

    @property
    def recall(self) -> float:
        return self.correct / self.clips

    def to_json(self) -> dict:
        return {"label": self.label, "clips": self.clips, "threshold": self.threshold,
                "given": self.given, "precision": _round(self.precision),
                "recall": _round(self.recall), "ap": _round(self.ap),
                "prompt_ap": {p: _round(v) for p, v in self.prompt_ap.items()}}


@dataclass(frozen=True)
class SetResult:
    """One prompt set's results."""

    name: str
    prompts: tuple[tuple[str, ...], ...]  # per vocabulary tag
    top1: float
    topk: float
    map: float
    ap: dict[str, float]  # per tag with clips
    unknown: tuple[str, ...]  # prompts the model knows no word of

    def to_json(self) -> dict:
        return {"name": self.name, "top1": _round(self.top1), "topk": _round(self.topk),
                "map": _round(self.map), "ap": {k: _round(v) for k, v in self.ap.items()},
                "prompts": [list(p) for p in self.prompts], "unknown": list(self.unknown)}


@dataclass(frozen=True)
class Evaluation:
    labelled: Labelled
    scores: np.ndarray  # float32 [n_clips, n_tags], configured prompts
    given: np.ndarray  # bool [n_clips, n_tags]: the tags tagging gives (given_tags)
    k: int  # top-k accuracy's k
    tags: tuple[TagResult, ...]  # the tags with clips, vocabulary order
    confusions: tuple[Confusion, ...]
    matrix: Matrix  # see metrics.confusion_matrix
    sets: tuple[SetResult, ...]  # PROMPT_SETS order

    @property
    def configured(self) -> SetResult:
        return next(s for s in self.sets if s.name == "configured")

    @property
    def top1(self) -> float:
        return self.configured.top1

    @property
    def topk(self) -> float:
        return self.configured.topk

    @property
    def map(self) -> float:
        return self.configured.map

    def to_json(self) -> dict:
        rows, cols, counts = self.matrix
        lab = self.labelled
        return {
            "root": str(lab.root), "model": lab.model, "clips": len(lab.clips),
            "tags": len(self.tags), "k": self.k, "top1": _round(self.top1),
            "topk": _round(self.topk), "map": _round(self.map),
            "per_tag": [t.to_json() for t in self.tags],
            "confusions": [c.to_json() for c in self.confusions],
            "confusion_matrix": {"rows": list(rows), "columns": list(cols),
                                 "counts": counts.tolist()},
            "prompt_sets": [s.to_json() for s in self.sets],
            "folders": lab.folders, "unmatched_folders": list(lab.unmatched),
            "failed": [{"path": str(p), "reason": r} for p, r in lab.failed],
        }


# -- the evaluation -------------------------------------------------------------------------------

def evaluate(labelled: Labelled, entries: Sequence[VocabEntry], table: dict[str, np.ndarray],
             tagging: TaggingConfig, templates: Sequence[str] = DEFAULT_TEMPLATES,
             vectors: np.ndarray | None = None) -> Evaluation:
    """Score the labelled clips with each prompt set; `table` holds every prompt's embedding
    (embed_prompts). vectors: the vocabulary's own (float32 [n_tags, 512], app.vocabulary):
    the configured set is then what tagging uses, example tags included, which have no
    prompts to average."""
    labels = labelled.labels
    truth = labelled.truth
    k = min(TOP_K, len(labels))
    sets = prompt_sets(entries, templates)
    results, scores = [], {}
    for name in PROMPT_SETS:
        tag_vectors = vectors if name == "configured" and vectors is not None else \
            set_vectors(sets[name], table)
        scores[name] = clip_scores(labelled.embeddings, tag_vectors)
        results.append(_set_result(name, sets[name], scores[name], truth, labels, k, table))
    configured = scores["configured"]
    given = given_tags(configured, labels, tagging)
    tags = []
    for j, label in enumerate(labels):
        if not truth[:, j].any():
            continue
        prompts = sets["configured"][j]
        prompt_ap = {} if len(prompts) < 2 else {
            p: average_precision(clip_scores(labelled.embeddings, table[p][None, :])[:, 0],
                                 truth[:, j]) for p in prompts}
        tags.append(TagResult(label, int(truth[:, j].sum()),
                              tagging.thresholds.get(label, tagging.min_score),
                              int(given[:, j].sum()), int((given[:, j] & truth[:, j]).sum()),
                              results[PROMPT_SETS.index("configured")].ap[label], prompt_ap))
    pairs = confusions(configured, truth, labels)[:MAX_CONFUSIONS]
    return Evaluation(labelled, configured, given, k, tuple(tags), tuple(pairs),
                      confusion_matrix(configured, truth, labels), tuple(results))


def _set_result(name: str, prompts: tuple[tuple[str, ...], ...], scores: np.ndarray,
                truth: np.ndarray, labels: Sequence[str], k: int,
                table: dict[str, np.ndarray]) -> SetResult:
    ap = {labels[j]: average_precision(scores[:, j], truth[:, j])
          for j in range(len(labels)) if truth[:, j].any()}
    return SetResult(name, prompts, top_k_accuracy(scores, truth, 1),
                     top_k_accuracy(scores, truth, k), float(np.mean(list(ap.values()))), ap,
                     unknown_prompts((p for per_tag in prompts for p in per_tag), table))


def agreement(a: Evaluation, b: Evaluation) -> dict[str, float]:
    """Two evaluations of the same folder (f32 and INT8 embeddings) → the share of clips whose
    top-1 tag is the same, and whose given tags are the same; clips matched by content."""
    rows = {c.sha256: i for i, c in enumerate(b.labelled.clips)}
    pairs = [(i, rows[c.sha256]) for i, c in enumerate(a.labelled.clips) if c.sha256 in rows]
    if not pairs:
        return {"clips": 0, "top1": float("nan"), "given": float("nan")}
    top1 = [a.scores[i].argmax() == b.scores[j].argmax() for i, j in pairs]
    given = [np.array_equal(a.given[i], b.given[j]) for i, j in pairs]
    return {"clips": len(pairs), "top1": float(np.mean(top1)), "given": float(np.mean(given))}


def _round(value: float | None) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 4)
