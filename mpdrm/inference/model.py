"""A site's trained model loaded from its model directory: score visits, enrol patients.

``load_model_dir(path) -> SiteModel``. A video is decoded with the same OpenCV pipeline as
training (:func:`mpdrm.data.prepare.process_video` at the model's ``PrepareConfig``); its
score is the mean of its clips' predictions, as in the run's evaluation. The personality
embedding p of a scored clip is the subject's reference when a subject is named (an
enrolled patient, or a training subject of the site), else the clip's own.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mpdrm
from mpdrm.config import MPDRMConfig
from mpdrm.data.prepare import PrepareConfig, process_video
from mpdrm.memory_format import model_in_format, resolve_memory_format

from .keep import subject_references
from .modeldir import (SUBJECTS_FILE, WEIGHTS_FILE, ModelDirError, file_sha256, read_enrolled, read_meta, read_tree,
                       write_enrolled)

#: Below this face-found ratio a scored video gets a warning.
LOW_FACE_RATE = 0.5
#: Fewer clips than this and a scored video gets a warning.
FEW_CLIPS = 3


class ScoringError(ValueError):
    """A file that could not be scored; ``str(e)`` names the file and says why, ``kind`` is a keyword."""

    def __init__(self, path: str, kind: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.kind, self.reason = path, kind, reason


@dataclass
class ClipScores:
    """Per-clip predictions of one set of clips."""

    prediction: np.ndarray          # (N,) normalised scores, or (N, K) class probabilities
    personality: str                # "clip" or "subject <id> (<source>)"
    warnings: list[str] = field(default_factory=list)


@dataclass
class VideoScore:
    """One scored video (or, with ``error`` set, one that could not be scored)."""

    video: str
    score: float | None = None          # on the scale (regression), or the predicted class
    normalised: float | None = None     # score / score_max (regression)
    low: float | None = None            # 10th percentile of the clips' scores (on the scale)
    high: float | None = None           # 90th percentile
    clips: int = 0
    face_rate: float | None = None      # None when the detector is "none" (face-crop videos)
    personality: str = ""
    probabilities: list[float] | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def row(self) -> dict[str, Any]:
        """A flat dict for JSON or CSV (warnings joined with "; ")."""
        d = dataclasses.asdict(self)
        d["warnings"] = "; ".join(self.warnings)
        return d


def load_model_dir(path: str | Path) -> "SiteModel":
    """Load a model directory written by the site (or ``mpdrm-export``); checks the file hashes."""
    return SiteModel(Path(path))


class SiteModel:
    """The personalised model of one site, ready to score visits.

    Attributes
    ----------
    path : Path
        The model directory.
    meta : dict
        ``model.json``.
    model : MPDRM
        In eval mode, on CPU.
    prepare : PrepareConfig
        The clip settings of training (concrete detector).
    """

    def __init__(self, path: Path, batch_size: int = 16) -> None:
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self.batch_size = batch_size
        self.model = mpdrm.build_model(MPDRMConfig(**self.meta["model"]))
        try:
            self.model.load_state_dict(read_tree(self.path, WEIGHTS_FILE, self.meta), strict=True)
        except RuntimeError as error:
            raise ModelDirError(f"{self.path / WEIGHTS_FILE}: does not fit model.json's model ({error})") from None
        self.model.eval()
        self.prepare = PrepareConfig(**self.meta["prepare"])
        subjects = read_tree(self.path, SUBJECTS_FILE, self.meta)
        ref = subjects["reference"]
        self.training = {sid: ref[i] for i, sid in enumerate(subjects["ids"])} if ref is not None else {}
        self.enrolled = read_enrolled(self.path)
        self.weights_sha256 = self.meta["files"][WEIGHTS_FILE]

    # ------------------------------------------------------------------ properties
    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def calibration_offset(self) -> float:
        """The site's calibration offset added to every regression score (0 without one)."""
        return float((self.meta.get("calibration") or {}).get("offset", 0.0))

    @property
    def score_max(self) -> float:
        return float(self.meta["score_max"])

    @property
    def has_personality(self) -> bool:
        return self.model.personality is not None

    def subjects(self) -> dict[str, str]:
        """Known subject id -> where its reference comes from (``enrolled`` wins over ``training``)."""
        known = {sid: "training" for sid in self.training}
        known.update({sid: "enrolled" for sid in self.enrolled})
        return known

    # ------------------------------------------------------------------ references
    def reference(self, subject: str) -> tuple[torch.Tensor, str]:
        """The personality reference of ``subject`` and its source; ``KeyError`` naming it if unknown."""
        subject = str(subject)
        if subject in self.enrolled:
            record = self.enrolled[subject]
            if record["weights_sha256"] != self.weights_sha256:   # enrolled with an older model
                return self.embed_reference(record["clips"]), "enrolled, re-embedded for these weights"
            return record["reference"], "enrolled"
        if subject in self.training:
            return self.training[subject], "training"
        raise KeyError(f"subject {subject!r} is neither enrolled in {self.path} nor a training subject of site "
                       f"{self.meta.get('site')!r}; enrol the patient first (mpdrm-enroll {self.path} --subject "
                       f"{subject} VIDEO)")

    def embed_reference(self, clips: np.ndarray) -> torch.Tensor:
        """The normalised mean personality embedding of ``clips`` (batched in order)."""
        refs = subject_references(self.model, self._batches(clips, with_subject=True))
        return refs[0]

    # ------------------------------------------------------------------ scoring
    def _tensor(self, clips: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = clips if isinstance(clips, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(clips))
        if x.dtype == torch.uint8:
            x = x.float() * np.float32(1 / 255)
        c = self.model.config
        want = (c.in_channels, c.frames, c.image_size, c.image_size)
        if x.ndim != 5 or tuple(x.shape[1:]) != want:
            raise ValueError(f"clips must be (N, {', '.join(map(str, want))}); got {tuple(x.shape)}")
        return x.float()

    def _batches(self, clips: np.ndarray | torch.Tensor, with_subject: bool = False,
                 progress: Any = None) -> Iterable[dict[str, torch.Tensor]]:
        x = self._tensor(clips)
        for i in range(0, len(x), self.batch_size):
            part = x[i:i + self.batch_size]
            if progress is not None:
                progress.update(len(part))
            yield {"clips": part, "subject": torch.zeros(len(part), dtype=torch.int64)} if with_subject else {"clips": part}

    @torch.no_grad()
    def score_clips(self, clips: np.ndarray | torch.Tensor, subject: str | None = None,
                    progress: Any = None) -> ClipScores:
        """Predictions for clips ``(N, C, T, H, W)`` (uint8, or float in [0, 1]).

        Parameters
        ----------
        clips : array
            Clips as the model's ``PrepareConfig`` cuts them.
        subject : str, optional
            An enrolled patient or a training subject of the site: its reference replaces
            each clip's own personality embedding.
        progress : tqdm-like, optional
            Advanced by the number of clips scored.
        """
        if len(clips) == 0:
            raise ValueError("no clips to score")
        ref, personality, warnings = None, "clip", []
        if subject is not None and self.has_personality:
            ref, source = self.reference(subject)
            personality = f"subject {subject} ({source})"
        elif subject is not None:
            warnings.append("the model has no personality branch: --subject has no effect")
        preds = []
        layout = resolve_memory_format("auto", torch.device("cpu"))   # the model scores on the CPU
        with model_in_format(self.model, layout):
            for batch in self._batches(clips, progress=progress):
                override = ref.expand(len(batch["clips"]), -1) if ref is not None else None
                out = self.model(batch["clips"].contiguous(memory_format=layout), personality=override).prediction
                preds.append(out.softmax(-1) if self.task == "classification" else out + self.calibration_offset)
        return ClipScores(torch.cat(preds).float().numpy(), personality, warnings)

    def summarise(self, video: str, scores: ClipScores, meta: dict[str, Any]) -> VideoScore:
        """A :class:`VideoScore` from clip scores and the decoding facts (``process_video``'s meta)."""
        result = VideoScore(video=video, clips=len(scores.prediction), face_rate=meta.get("face_rate"),
                            personality=scores.personality, warnings=list(scores.warnings))
        if self.task == "classification":
            probs = scores.prediction.astype(np.float64).mean(0)
            result.probabilities = [float(p) for p in probs]
            result.score = float(np.argmax(probs))
        else:
            clip = scores.prediction.astype(np.float64) * self.score_max
            result.normalised = float(scores.prediction.astype(np.float64).mean())
            result.score = result.normalised * self.score_max
            result.low, result.high = (float(v) for v in np.percentile(clip, [10, 90]))
        result.warnings += _warnings(result, meta, self.score_max if self.task == "regression" else None)
        return result

    def clips_of(self, video: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
        """Decode ``video`` into clips at the model's ``PrepareConfig``; :class:`ScoringError` if unusable."""
        path = Path(video)
        if not path.exists():
            raise ScoringError(str(video), "missing", "file not found")
        if not path.is_file():
            raise ScoringError(str(video), "not_file", "not a file")
        out = process_video(path, self.prepare)
        if out.meta["status"] != "ok":
            raise ScoringError(str(video), str(out.meta.get("kind", "unusable")), str(out.meta.get("reason")))
        return out.clips, out.meta

    def score_video(self, video: str | Path, subject: str | None = None, progress: Any = None) -> VideoScore:
        """Score one video; raises :class:`ScoringError` (naming the file) when it cannot be used."""
        start = time.perf_counter()
        clips, meta = self.clips_of(video)
        result = self.summarise(str(video), self.score_clips(clips, subject, progress=progress), meta)
        result.seconds = time.perf_counter() - start
        return result

    def score_videos(self, videos: Sequence[str | Path], subject: str | None = None,
                     progress: bool = False) -> list[VideoScore]:
        """Score each video; a file that cannot be used gets a row with ``error`` and the rest go on."""
        rows = []
        for video in videos:
            bar = _bar(video) if progress else None
            try:
                rows.append(self.score_video(video, subject, progress=bar))
            except ScoringError as error:
                rows.append(VideoScore(video=str(video), error=str(error)))
            except KeyError as error:   # unknown subject: the same for every file
                rows.append(VideoScore(video=str(video), error=f"{video}: {error.args[0]}"))
            finally:
                if bar is not None:
                    bar.close()
        return rows

    # ------------------------------------------------------------------ enrolment
    def enroll(self, subject: str, video: str | Path, score: float | None = None) -> dict[str, Any]:
        """Set ``subject``'s personality reference from a baseline visit (nothing leaves the site).

        The reference is the normalised mean personality embedding of the visit's clips; it is
        stored with the clips in ``enrolled.safetensors`` (the weights file is untouched), so
        a later model version re-embeds them. ``score`` (the visit's known score) is recorded
        and compared with the model's prediction for the visit; no parameter is fitted.

        Returns
        -------
        dict
            The stored record without tensors, plus ``predicted`` (the baseline visit's score
            with the new reference).
        """
        clips, meta = self.clips_of(video)
        return self.enroll_clips(subject, clips, score=score, source=str(video), video_sha256=file_sha256(Path(video)),
                                 face_rate=meta.get("face_rate"))

    def enroll_clips(self, subject: str, clips: np.ndarray, score: float | None = None, *, source: str = "",
                     video_sha256: str = "", face_rate: float | None = None) -> dict[str, Any]:
        """:meth:`enroll` from clips already cut (uint8 ``(N, C, T, H, W)``)."""
        if not self.has_personality:
            raise ValueError(f"{self.path}: the model has no personality branch; enrolment has no effect")
        clips = np.ascontiguousarray(clips)
        record = {"reference": self.embed_reference(clips).contiguous(), "clips": clips, "video": source,
                  "video_sha256": video_sha256, "score": None if score is None else float(score),
                  "face_rate": face_rate, "num_clips": int(len(clips)), "weights_sha256": self.weights_sha256}
        enrolled = {**read_enrolled(self.path), str(subject): record}
        write_enrolled(self.path, enrolled)
        self.enrolled = enrolled
        summary = {k: v for k, v in record.items() if k not in ("reference", "clips")}
        summary["predicted"] = self.summarise(source, self.score_clips(clips, str(subject)), {}).score
        return summary


def _warnings(result: VideoScore, meta: dict[str, Any], score_max: float | None) -> list[str]:
    out = []
    if score_max is not None and not 0 <= result.score <= score_max:
        out.append(f"score outside the scale 0-{score_max:g} (not clipped)")
    if result.face_rate is not None and result.face_rate < LOW_FACE_RATE:
        out.append(f"face found in only {result.face_rate:.0%} of the checked frames")
    if result.clips < FEW_CLIPS:
        out.append(f"only {result.clips} clip(s) scored")
    if meta.get("fps_assumed"):
        out.append("the file states no frame rate; one was assumed")
    if result.personality == "clip":
        out.append("no subject given: each clip's own personality embedding")
    return out


def _bar(video: str | Path) -> Any:
    from tqdm import tqdm  # progress on stderr, per video

    return tqdm(desc=f"score {Path(video).name}", unit="clip", leave=False)


__all__ = ["ClipScores", "ScoringError", "SiteModel", "VideoScore", "load_model_dir"]
