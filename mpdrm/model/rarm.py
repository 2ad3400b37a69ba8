"""RARM: the relational attention recognition module, and the output head.

Given the depression tokens d_t (B, T, D) and the personality embedding p (B, E) (unit norm):

1. attention: alpha_t = sigmoid(w_a . tanh(W_a d_t + b_a) + c_a)           (per token)
2. suppression: u = normalize(W_u p) (a learned projection of p into the depression space,
   initialised to the identity); d~_t = d_t - (d_t . u) u  -- each token loses its component
   along the personality direction;
3. relation: beta_t = sigmoid(MLP([d_t ; p]))                              (per token)
4. pooling: z = sum_t (alpha_t beta_t) d~_t / sum_t (alpha_t beta_t)

(Steps 1, 3 and 4 follow the self-/relation-attention of frame attention networks, with p as
the reference the relation is taken against.) Without p (MPFN ablated) steps 2 and 3 are skipped:
z = sum_t alpha_t d_t / sum_t alpha_t. z goes to the output head.

Without RARM at all (``use_rarm=False``) the model pools plainly, z = mean_t d_t.
All weights live in nn.Linear; every operation is per example.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RARM(nn.Module):
    def __init__(self, dim: int, hidden: int, *, personality_dim: int | None) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.personality_proj = None
        self.relation = None
        if personality_dim is not None:
            self.personality_proj = nn.Linear(personality_dim, dim, bias=False)
            with torch.no_grad():
                self.personality_proj.weight.copy_(torch.eye(dim, personality_dim))
            self.relation = nn.Sequential(nn.Linear(dim + personality_dim, hidden), nn.Tanh(),
                                          nn.Linear(hidden, 1))

    def forward(self, tokens: torch.Tensor, p: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the pooled representation z (B, D) and the pooling weights (B, T)."""
        weight = torch.sigmoid(self.attention(tokens).squeeze(-1))  # (B, T)
        values = tokens
        if p is not None and self.personality_proj is not None:
            u = F.normalize(self.personality_proj(p), dim=-1)  # (B, D)
            values = tokens - (tokens * u.unsqueeze(1)).sum(-1, keepdim=True) * u.unsqueeze(1)
            rel_in = torch.cat([tokens, p.unsqueeze(1).expand(-1, tokens.shape[1], -1)], dim=-1)
            weight = weight * torch.sigmoid(self.relation(rel_in).squeeze(-1))
        weight = weight / weight.sum(dim=1, keepdim=True).clamp_min(1e-6)
        return torch.einsum("bt,btd->bd", weight, values), weight


class OutputHead(nn.Sequential):
    """MLP head: D -> hidden -> (1 for regression | K logits)."""

    def __init__(self, dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))
