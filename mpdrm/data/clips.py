"""Cutting clips of T frames, sampled with a temporal stride, over sliding windows.

A clip covers a *window* of ``(frames - 1) * stride + 1`` consecutive (resampled) frames and
takes every ``stride``-th of them; consecutive windows start ``hop`` frames apart. With the
defaults (T=16, stride 2, hop 8, 15 fps) a clip spans 31 frames = 2.07 s and a new clip
starts every 0.53 s. A video shorter than one window yields no clip (and is reported).
"""
from __future__ import annotations

import numpy as np


def window_length(frames: int, stride: int) -> int:
    return (frames - 1) * stride + 1


def clip_starts(n_frames: int, frames: int, stride: int, hop: int,
                max_clips: int | None = None) -> list[int]:
    """Start indices of the windows that fit in ``n_frames``. With ``max_clips``, that many
    windows spread evenly over the video (first and last kept)."""
    win = window_length(frames, stride)
    if n_frames < win:
        return []
    starts = list(range(0, n_frames - win + 1, max(1, hop)))
    if max_clips is not None and len(starts) > max_clips > 0:
        idx = np.linspace(0, len(starts) - 1, max_clips).round().astype(int)
        starts = [starts[i] for i in idx]
    return starts


def cut_clips(frames_thwc: np.ndarray, starts: list[int], frames: int, stride: int) -> np.ndarray:
    """(F, H, W, C) uint8 frames -> (N, C, T, H, W) uint8 clips."""
    if not starts:
        f, h, w, c = frames_thwc.shape
        return np.zeros((0, c, frames, h, w), frames_thwc.dtype)
    win = window_length(frames, stride)
    clips = np.stack([frames_thwc[s:s + win:stride] for s in starts])  # N, T, H, W, C
    return np.ascontiguousarray(clips.transpose(0, 4, 1, 2, 3))
