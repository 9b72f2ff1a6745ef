"""The visual parser: a timm Swin Transformer behind a thin adapter.

The adapter adds two things to timm's model: the final feature map as a token sequence
``(B, m, c)`` and, on request, the last block's self-attention as a full ``(B, m, m)`` map that
attention-guided Masked Feature Regression uses to pick correlated tokens.

timm's ``WindowAttention`` may run fused attention and never materialise its weights, so the
adapter captures the input of the last block's ``attn`` module with a forward pre-hook, and
recomputes ``softmax(q k^T * scale + relative position bias + shift mask)`` from the module's own
``qkv`` layer and bias table. The hook is registered once, when the parser is built, and keeps
the input only during a forward that asks for the attention: a hook registered inside the
forward would break a ``torch.compile`` graph there (Dynamo cannot trace the creation of hook
handles). Each window's ``(N_w, N_w)`` map is then scattered back to the original token order
(undoing the window partition and the cyclic shift), so with several windows the map is
block-diagonal up to that permutation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vlparse.config import VisualConfig
from vlparse.models.outputs import VisualOutput
from vlparse.models.visual.base import GridEmbedder, create_timm_model
from vlparse.models.weights import LoadReport, existing_checkpoint, read_state_dict

__all__ = ["SwinParser"]


def _timm_kwargs(cfg: VisualConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        num_classes=0,
        img_size=cfg.image_size,
        window_size=cfg.window_size,
        drop_path_rate=cfg.drop_path_rate,
    )
    if cfg.embed_dim is not None:
        kwargs["embed_dim"] = cfg.embed_dim
    if cfg.depths is not None:
        kwargs["depths"] = tuple(cfg.depths)
    if cfg.num_heads is not None:
        kwargs["num_heads"] = tuple(cfg.num_heads)
    if cfg.patch_size is not None:
        kwargs["patch_size"] = cfg.patch_size
    return kwargs


class SwinParser(GridEmbedder):
    """Swin Transformer visual parser.

    Args:
        cfg: the visual config; ``arch`` names a timm Swin model, ``embed_dim``, ``depths`` and
            ``num_heads`` override it. No weights are read here: see :meth:`load_pretrained`.

    Attributes:
        model: the timm ``SwinTransformer`` (headless, ``num_classes=0``).
    """

    has_attention = True

    def __init__(self, cfg: VisualConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = create_timm_model(
            cfg, _timm_kwargs(cfg),
            f"with image_size={cfg.image_size}, window_size={cfg.window_size}",
            "The image side must be divisible by patch size * 2**(stages-1), and arch must be a "
            "timm Swin model.",
        )
        if not hasattr(self.model, "layers") or not hasattr(self.model.layers[-1], "blocks"):
            raise ValueError(f"model.visual.arch '{cfg.arch}' is not a timm Swin Transformer")
        h, w = self.model.layers[-1].blocks[-1].input_resolution
        self._grid = (int(h), int(w))
        # where each window entry of the last block's attention goes in the (m, m) map: a
        # function of the sizes only, made once on the host so that a forward reads nothing back
        idx = self.window_token_index(device=torch.device("cpu"))  # (nW, N_w)
        valid = idx >= 0
        pair = (valid[:, :, None] & valid[:, None, :]).flatten()
        n = idx.shape[1]
        self._window_padded = not bool(valid.all())
        for name, value in (("_window_valid", valid), ("_pair_flat", pair.nonzero()[:, 0]),
                            ("_pair_rows", idx[:, :, None].expand(-1, -1, n).flatten()[pair]),
                            ("_pair_cols", idx[:, None, :].expand(-1, n, -1).flatten()[pair])):
            # on the device the model is built on (a CPU index into a CUDA map is a copy from the
            # host, which synchronises, in every forward that returns the attention)
            self.register_buffer(name, value.to(torch.get_default_device()), persistent=False)
        # the last block's attention input of the running forward: a list to fill while a
        # forward asks for the attention, None otherwise (the hook then does nothing)
        self._attn_inputs: list[tuple[Tensor, Tensor | None]] | None = None
        self.last_block.attn.register_forward_pre_hook(self._keep_attn_input, with_kwargs=True)

    # ------------------------------------------------------------------ properties

    @property
    def last_block(self) -> nn.Module:
        """The last ``SwinTransformerBlock`` (whose attention :meth:`forward` returns)."""
        return self.model.layers[-1].blocks[-1]

    # ------------------------------------------------------------------ forward

    def forward(self, images: Tensor, output_attentions: bool = False) -> VisualOutput:
        """Encode images.

        Args:
            images: ``(B, 3, H, W)`` normalised images, ``H = W = cfg.image_size``.
            output_attentions: also return the last block's attention ``(B, m, m)``.

        Returns:
            :class:`VisualOutput` with ``tokens (B, m, c)`` (after the final LayerNorm,
            row-major over ``grid_size``) and ``attention`` when asked.
        """
        self._check_images(images)
        captured: list[tuple[Tensor, Tensor | None]] = []
        self._attn_inputs = captured if output_attentions else None
        try:
            feats = self.model.forward_features(images)  # (B, h, w, c) NHWC
        finally:
            self._attn_inputs = None
        b = feats.shape[0]
        tokens = feats.reshape(b, -1, feats.shape[-1])
        attention = None
        if output_attentions:
            if not captured:
                raise RuntimeError("SwinParser: the last block's attention input was not captured")
            attention = self._full_attention(*captured[0], batch=b)
        return VisualOutput(tokens=tokens, grid_size=self.grid_size, attention=attention)

    def _keep_attn_input(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Forward pre-hook of the last block's ``attn``: keeps its first input of the running
        forward, ``x (B * nW, N_w, C)`` and ``mask (nW, N_w, N_w)`` or ``None``, when that forward
        asked for the attention (``self._attn_inputs`` is a list)."""
        store = self._attn_inputs
        if store is None or store:
            return
        x = args[0] if args else kwargs["x"]
        mask = args[1] if len(args) > 1 else kwargs.get("mask")
        store.append((x, mask))

    def window_token_index(self, device: torch.device | None = None) -> Tensor:
        """``(nW, N_w)`` long: the original row-major token index of each position of each window
        of the last block (after its cyclic shift and padding), ``-1`` for padding."""
        blk = self.last_block
        h, w = self._grid
        wh, ww = blk.window_size
        sh, sw = blk.shift_size
        hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
        rows = torch.arange(hp, device=device)
        cols = torch.arange(wp, device=device)
        orig_r = (rows + sh) % h  # shifted[p] = x[(p + shift) mod h]
        orig_c = (cols + sw) % w
        idx = orig_r[:, None] * w + orig_c[None, :]
        idx = idx.masked_fill((rows[:, None] >= h) | (cols[None, :] >= w), -1)  # (hp, wp)
        idx = idx.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3)
        return idx.reshape(-1, wh * ww)

    def _full_attention(self, x: Tensor, mask: Tensor | None, batch: int) -> Tensor:
        """Recompute the last block's attention from its input windows and scatter it.

        Args:
            x: ``(B * nW, N_w, C)`` the windows fed to ``attn`` (after norm1, shift, partition).
            mask: ``(nW, N_w, N_w)`` additive shift mask or ``None``.

        Returns:
            ``(B, m, m)`` heads-averaged attention in the original token order.
        """
        attn_mod = self.last_block.attn
        bw, n, _ = x.shape
        heads = attn_mod.num_heads
        qkv = attn_mod.qkv(x).reshape(bw, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]  # (B*nW, H, N_w, d)
        logits = (q * attn_mod.scale) @ k.transpose(-2, -1) + attn_mod._get_rel_pos_bias()
        num_win = bw // batch
        logits = logits.view(batch, num_win, heads, n, n)
        if mask is not None:
            logits = logits + mask.to(logits.dtype).view(1, num_win, 1, n, n)
        probs = logits.float().softmax(dim=-1).mean(dim=2)  # (B, nW, N_w, N_w)

        if self._window_padded:
            # timm attends to zero padding; drop padded keys and renormalise the real ones
            probs = probs * self._window_valid[None, :, None, :]
            probs = probs / probs.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        m = self.num_tokens
        full = probs.new_zeros(batch, m, m)
        full[:, self._pair_rows, self._pair_cols] = probs.flatten(1)[:, self._pair_flat]
        return full.to(x.dtype)

    # ------------------------------------------------------------------ weights

    def load_pretrained(self, source: str) -> LoadReport:
        """Load Swin weights and report missing / unexpected keys.

        Args:
            source: ``"timm"`` for timm's pretrained weights of ``cfg.arch`` (read from the local
                Hugging Face cache; there is no download here if the machine is offline), or a
                local ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` file (a dict with ``model``
                or ``state_dict`` is unwrapped). Keys are adapted with timm's Swin
                ``checkpoint_filter_fn`` (relative position tables resized to the window size,
                old-style checkpoints renamed); the classifier head is ignored.
        """
        if source == "timm":
            hint = "Otherwise set model.visual.pretrained=/path/to/swin.safetensors"
            return self._load_timm_pretrained(hint, **_timm_kwargs(self.cfg))
        path = existing_checkpoint(source)
        from timm.models.swin_transformer import checkpoint_filter_fn

        raw = read_state_dict(path)
        state = checkpoint_filter_fn(raw, self.model)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        return self._load_file_state(path, state)
