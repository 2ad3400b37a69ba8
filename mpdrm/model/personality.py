"""MPFN: the multi-scale personality feature network, its projection head and its prototypes.

Everything here is site-local: the MPDRM module mounts it as ``personality``, and
`mpdrm.partition` keeps every ``personality.*`` name on the site.

- backbone: the same topology as MDFN's, separate weights;
- ``head``: projection MLP (C -> C -> E) to the personality embedding p, L2-normalised per example;
- ``offset`` (``personal_offset=True``): a linear map from p to an offset of the prediction,
  zero at initialisation, so that a site can learn each known person's habitual bias;
- ``prototypes``: ``nn.Embedding(num_subjects, E)``; row j is subject j's prototype (absent when
  num_subjects == 0). They are normalised at use: `prototype_similarity` looks every prototype
  up *per example* (an index tensor of shape (B, S)) and normalises the looked-up rows, so the
  cosine similarities are computed from activations of a supported layer. That keeps Opacus'
  per-sample gradients exact in every grad_sample_mode (grouped, hooks, ew, functorch): no computation
  touches the weight outside the layer's own forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MPDRMConfig
from .backbone import Backbone


class PersonalityNetwork(nn.Module):
    def __init__(self, cfg: MPDRMConfig) -> None:
        super().__init__()
        self.backbone = Backbone(cfg)
        c = self.backbone.out_channels
        self.head = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, cfg.embed_dim))
        self.prototypes = nn.Embedding(cfg.num_subjects, cfg.embed_dim) if cfg.num_subjects > 0 else None
        self.offset = nn.Linear(cfg.embed_dim, cfg.output_dim) if cfg.personal_offset else None
        if self.offset is not None:
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)

    @property
    def num_prototypes(self) -> int:
        return 0 if self.prototypes is None else self.prototypes.num_embeddings

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Unit-norm personality embedding p, (B, E)."""
        _, pooled = self.backbone(clips)
        return F.normalize(self.head(pooled), dim=-1)

    @torch.no_grad()
    def center_projection(self, clips: torch.Tensor) -> None:
        """Shift the projection's last bias so that its mean output over ``clips`` is zero.

        A fresh backbone's pooled features share one large component (post-ReLU averages), so
        every clip maps to nearly the same p (mean pairwise cosine 0.998 on the synthetic cohort)
        and the contrastive loss starts at chance with almost no gradient. Centring the
        projection's output on the site's own clips spreads p over the sphere (cosine about 0).
        """
        was_training = self.training
        self.eval()
        try:
            _, pooled = self.backbone(clips)
            last = self.head[-1]
            last.bias -= self.head(pooled).mean(0)
        finally:
            self.train(was_training)

    def prototype_similarity(self, p: torch.Tensor) -> torch.Tensor | None:
        """Cosine similarity of each p to every prototype, (B, S); None without prototypes."""
        if self.prototypes is None:
            return None
        s = self.prototypes.num_embeddings
        index = torch.arange(s, device=p.device).expand(p.shape[0], s)
        protos = F.normalize(self.prototypes(index), dim=-1)  # (B, S, E)
        return torch.einsum("be,bse->bs", p, protos)
