"""MPDRM's losses.

- `task_loss`: MSE or Huber on the normalised score (regression), cross-entropy (classification).
- `supervised_contrastive_loss`: SupCon over the batch on the personality embeddings, with
  positives = same subject, preferring other visits (exact rule in its docstring). Couples the
  examples of a batch, so it is NOT usable under DP-SGD.
- `prototype_contrastive_loss`: per-example proxy loss against learnable per-subject prototypes
  (cross-entropy over cosine similarities / temperature). DP-safe.
- `orthogonality_loss`: per-example squared cosine between the depression vector d and the
  personality embedding p. DP-safe.
- `MPDRMLoss`: task + lambda_c * contrastive + lambda_o * orthogonality; ``per_example=True``
  uses only per-example terms and can return the per-example losses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    if reduction == "mean":
        # an empty batch gives 0 (connected to the graph), not NaN
        return values.sum() / max(values.shape[0], 1)
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def task_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    kind: str = "mse",
    *,
    reduction: str = "mean",
    huber_delta: float = 0.1,
) -> torch.Tensor:
    """kind: 'mse' | 'huber' (prediction (B,), float target (B,)) or 'ce' (logits (B, K), int
    target (B,)). Per-example values are reduced by `reduction`."""
    if kind == "ce":
        per = F.cross_entropy(prediction, target.long(), reduction="none")
    elif kind == "mse":
        per = (prediction - target.to(prediction.dtype)).square()
    elif kind == "huber":
        per = F.huber_loss(prediction, target.to(prediction.dtype), reduction="none", delta=huber_delta)
    else:
        raise ValueError(f"unknown task loss {kind!r} (mse | huber | ce)")
    return _reduce(per, reduction)


def supervised_contrastive_loss(
    emb: torch.Tensor,
    subjects: torch.Tensor,
    visits: torch.Tensor | None = None,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the L_out form) over a batch.

    Embeddings are L2-normalised here; s_ij = z_i . z_j / temperature. For an anchor i let
    S_i = {j != i : subject_j == subject_i} and C_i = {j in S_i : visit_j != visit_i}.

    - "Preferred" positives are the cross-visit ones: if C_i is non-empty, the positives are
      P_i = C_i, and the same-visit clips of the same subject (S_i minus C_i) are left out of the
      anchor's term entirely (neither positives nor in the denominator), so they are not pushed
      apart either.
    - Fallback: if C_i is empty (the subject has one visit in the batch) the positives are
      P_i = S_i (same-visit clips).
    - The denominator runs over A_i = every j != i except the left-out clips; clips of other
      subjects are the negatives.

    loss_i = -1/|P_i| sum_{p in P_i} (s_ip - log sum_{a in A_i} exp(s_ia)); the loss is the mean
    over anchors with |P_i| > 0, and 0 when no anchor has a positive. With ``visits=None`` every
    same-subject clip is a positive (plain SupCon).
    """
    z = F.normalize(emb, dim=-1)
    n = z.shape[0]
    if n < 2:
        return z.sum() * 0.0
    logits = (z @ z.T) / temperature
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    same_subject = (subjects.view(-1, 1) == subjects.view(1, -1)) & ~eye
    if visits is None:
        positives = same_subject
        excluded = torch.zeros_like(same_subject)
    else:
        cross = same_subject & (visits.view(-1, 1) != visits.view(1, -1))
        has_cross = cross.any(dim=1, keepdim=True)
        positives = torch.where(has_cross, cross, same_subject)
        excluded = has_cross & same_subject & ~cross
    denominator = ~eye & ~excluded
    log_norm = torch.logsumexp(logits.masked_fill(~denominator, float("-inf")), dim=1)
    log_prob = logits - log_norm.unsqueeze(1)
    npos = positives.sum(dim=1)
    valid = npos > 0
    if not bool(valid.any()):
        return z.sum() * 0.0
    per_anchor = -(log_prob * positives).sum(dim=1) / npos.clamp_min(1)
    return per_anchor[valid].mean()


def prototype_contrastive_from_similarity(
    similarity: torch.Tensor,
    subjects: torch.Tensor,
    temperature: float = 0.1,
    reduction: str = "mean",
) -> torch.Tensor:
    """Per-example cross-entropy over cosine similarities (B, S) / temperature, target = the
    example's subject. Examples whose subject is outside 0..S-1 (e.g. -1: unknown) contribute 0.
    'mean' divides by the batch size (every example counts), as DP-SGD's mean reduction expects."""
    s = similarity.shape[1]
    valid = (subjects >= 0) & (subjects < s)
    safe = torch.where(valid, subjects, torch.zeros_like(subjects)).long()
    per = F.cross_entropy(similarity / temperature, safe, reduction="none") * valid.to(similarity.dtype)
    return _reduce(per, reduction)


def prototype_contrastive_loss(
    emb: torch.Tensor,
    prototype_weight: torch.Tensor,
    subjects: torch.Tensor,
    temperature: float = 0.1,
    reduction: str = "mean",
) -> torch.Tensor:
    """Prototype (proxy) contrastive loss: -log softmax_j(cos(e_i, w_j) / T)[subject_i] per example;
    embeddings and prototype rows (S, E) are L2-normalised at use. (The model computes the same
    similarities inside its forward, via the prototype layer, for Opacus; see
    `MPDRMOutput.prototype_similarity`.)"""
    sim = F.normalize(emb, dim=-1) @ F.normalize(prototype_weight, dim=-1).T
    return prototype_contrastive_from_similarity(sim, subjects, temperature, reduction)


def orthogonality_loss(d: torch.Tensor, p: torch.Tensor, reduction: str = "mean", eps: float = 1e-8) -> torch.Tensor:
    """Per example cos^2(d_i, p_i) = (d_i . p_i)^2 / (|d_i|^2 |p_i|^2): 0 when orthogonal, 1 when
    parallel. d and p must have the same dimension (MPDRM's D == E)."""
    if d.shape != p.shape:
        raise ValueError(f"orthogonality needs d and p of the same shape, got {tuple(d.shape)} and {tuple(p.shape)}")
    per = (d * p).sum(-1).square() / (d.square().sum(-1) * p.square().sum(-1)).clamp_min(eps)
    return _reduce(per, reduction)


@dataclass
class MPDRMLoss:
    """task + lambda_c * contrastive + lambda_o * orthogonality.

    task: 'regression' (kind 'mse' | 'huber') or 'classification' (cross-entropy).
    contrastive: 'supcon' (batch) or 'prototype' (per example). ``per_example=True`` forces the
    prototype loss and makes every term per example, so nothing couples the examples (DP-SGD).
    Terms whose inputs the model does not produce (no MPFN; no prototypes) are 0. A term whose
    inputs exist is always built into the graph, even with a zero weight, so every parameter gets
    a (possibly zero) gradient -- Opacus needs a per-sample gradient for each trainable parameter.

    Calling it with (output, batch) returns (loss, parts): loss is the scalar mean, or with
    ``reduction='none'`` (per_example only) the (B,) per-example losses; parts holds detached
    batch means of 'loss', 'task', 'contrastive', 'orthogonality'.
    """

    task: str = "regression"
    kind: str = "mse"
    lambda_c: float = 0.1
    lambda_o: float = 0.1
    contrastive: str = "supcon"
    temperature: float = 0.1
    huber_delta: float = 0.1
    per_example: bool = False
    use_orthogonality: bool = True

    def __post_init__(self) -> None:
        if self.contrastive not in ("supcon", "prototype"):
            raise ValueError(f"contrastive must be 'supcon' or 'prototype', got {self.contrastive!r}")
        if self.per_example:
            self.contrastive = "prototype"
        if self.task == "classification":
            self.kind = "ce"
        elif self.kind not in ("mse", "huber"):
            raise ValueError(f"regression loss must be 'mse' or 'huber', got {self.kind!r}")

    @classmethod
    def from_configs(cls, model_config: Any, train_config: Any, *, per_example: bool = False) -> "MPDRMLoss":
        return cls(
            task=model_config.task,
            kind=getattr(train_config, "loss", "mse"),
            lambda_c=train_config.lambda_c,
            lambda_o=train_config.lambda_o,
            contrastive=train_config.contrastive,
            temperature=train_config.temperature,
            huber_delta=getattr(train_config, "huber_delta", 0.1),
            per_example=per_example,
            use_orthogonality=model_config.use_orthogonality,
        )

    def __call__(self, output: Any, batch: Mapping[str, torch.Tensor], reduction: str = "mean"):
        if reduction == "none" and not self.per_example:
            raise ValueError("per-example losses need per_example=True")
        pred = output.prediction
        b = pred.shape[0]
        task = task_loss(pred, batch["target"], self.kind, reduction="none", huber_delta=self.huber_delta)
        zero = pred.new_zeros(b)
        contrast = zero
        contrast_scalar = None
        p = output.personality
        if p is not None:
            if self.contrastive == "prototype":
                if output.prototype_similarity is not None:
                    contrast = prototype_contrastive_from_similarity(
                        output.prototype_similarity, batch["subject"], self.temperature, "none")
            else:
                contrast_scalar = supervised_contrastive_loss(p, batch["subject"], batch.get("visit"),
                                                              self.temperature)
        orth = zero
        if p is not None and self.use_orthogonality:
            orth = orthogonality_loss(output.depression, p, reduction="none")
        per = task + self.lambda_c * contrast + self.lambda_o * orth
        if contrast_scalar is not None:
            if reduction != "mean":
                raise ValueError("the batch contrastive loss only has a 'mean' reduction")
            total = _reduce(per, "mean") + self.lambda_c * contrast_scalar
            contrast_mean = contrast_scalar.detach()
        else:
            total = per if reduction == "none" else _reduce(per, reduction)
            contrast_mean = _reduce(contrast.detach(), "mean")
        parts = {
            "loss": (_reduce(total.detach(), "mean") if total.dim() else total.detach()),
            "task": _reduce(task.detach(), "mean"),
            "contrastive": contrast_mean,
            "orthogonality": _reduce(orth.detach(), "mean"),
        }
        return total, parts
