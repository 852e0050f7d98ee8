"""The VLA transformer: one decoder over [instruction][observations t-h+1..t][action tokens].

Sequence (one row of the batch)::

    [text 0..Lt-1] [obs step 0: cam0 patches, cam1 patches, ..., state] ... [obs step T-1] [BOS a0 a1 ...]

Every token gets a learned modality-type embedding (text, image, state, action); image tokens also get
camera and time embeddings, state tokens time embeddings, text and action tokens position embeddings.

Attention (one boolean mask, ``scaled_dot_product_attention``) follows a *rank* per token: text has
rank 0, observation step k rank k+1, action token i rank T+1+i, and a token sees every key of equal or
lower rank. So the prefix is bidirectional within a timestep, never sees a later timestep (the
instruction is "timestep 0", visible to all), and actions are causal over the whole prefix. Padded
text tokens and padded observation steps are masked out as keys.

The first action token is predicted from a learned BOS action embedding placed right after the
prefix: input ``[BOS, a0, ..., a_{L-2}]`` yields logits for ``[a0, ..., a_{L-1}]``, so
``forward(obs, tokens)[:, i]`` predicts ``tokens[:, i]`` (teacher forcing). Generation runs the
prefix and BOS once (prefill) into a preallocated KV cache, then one token per step
(:mod:`vla.model.generation`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vla.model.encoders import TEXT_ENCODERS, VISION_ENCODERS, InstructionPool, build_encoder

TEXT, IMAGE, STATE, ACTION = range(4)  # modality-type ids


@dataclass
class VLAConfig:
    """Every size and choice of the model; saved as JSON in checkpoints (``to_dict``/``from_dict``)."""

    cameras: tuple[str, ...] = ("front", "wrist")  # feature observation.images.<name>, in this order
    image_size: int = 64  # square images, H = W
    patch_size: int = 8
    state_dim: int = 0  # 0: no proprioception tokens
    action_dim: int = 7
    n_obs_steps: int = 2
    horizon: int = 16  # actions per chunk
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    mlp_ratio: int = 4
    text_vocab_size: int = 512
    max_text_len: int = 32
    action_vocab_size: int = 257  # from the action tokenizer (bins + specials)
    max_action_tokens: int = 112  # tokens per chunk (binning: horizon * action_dim)
    vision_encoder: str = "patch"  # "patch" | "conv" | "pretrained:<path>" (see vla.model.encoders)
    text_encoder: str = "embedding"  # "embedding" | "pretrained:<path>"
    freeze_pretrained: bool = True  # freeze pretrained encoders, train only their projections
    state_tokens: int = 1  # proprioception tokens per timestep
    film: bool = False  # FiLM-condition the conv vision stem on the pooled instruction (encoders.py)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept in the checkpoint

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)  # YAML gives lists
        if not self.cameras:
            raise ValueError("VLAConfig.cameras must name at least one camera")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        for name in ("image_size", "patch_size", "action_dim", "n_obs_steps", "horizon", "n_layer",
                     "max_text_len", "action_vocab_size", "max_action_tokens"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"VLAConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.film and self.vision_encoder != "conv":
            raise ValueError(f"VLAConfig.film needs vision_encoder 'conv', got {self.vision_encoder!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cameras"] = list(self.cameras)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VLAConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VLAConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**d)


class SelfAttention(nn.Module):
    """Multi-head self-attention with an explicit boolean mask and an optional KV cache."""

    def __init__(self, config: VLAConfig):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.n_embd // config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(self, x: Tensor, mask: Tensor | None, cache: Tensor | None = None, start: int = 0) -> Tensor:
        """``x`` (B, S, D); ``mask`` (B, 1, S, S_keys) True = may attend. With ``cache`` (B, S_max, 2D),
        this chunk's keys and values are written at ``start`` and the queries attend to cache
        positions ``< start + S`` (the mask then covers those keys)."""
        B, S, D = x.shape
        H, hd = self.n_head, self.head_dim
        qkv = self.qkv(x)  # (B, S, 3D) laid out [q | k | v]
        kv = qkv[..., D:]
        if cache is not None:
            # One copy per layer and step: keys and values stay interleaved exactly as qkv made them.
            cache[:, start : start + S] = kv
            kv = cache[:, : start + S]
        q = qkv[..., :D].view(B, S, H, hd).transpose(1, 2)
        k = kv[..., :D].view(B, -1, H, hd).transpose(1, 2)
        v = kv[..., D:].view(B, -1, H, hd).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.proj(y.transpose(1, 2).reshape(B, S, D))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (GPT-2 style)."""

    def __init__(self, config: VLAConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        hidden = config.mlp_ratio * config.n_embd
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, config.n_embd)
        )
        # Identity when dropout is off: nn.Dropout still costs a dispatch per call when decoding.
        self.drop = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor | None, cache: Tensor | None = None, start: int = 0) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask, cache, start))
        return x + self.drop(self.mlp(self.ln2(x)))


class VLA(nn.Module):
    """The vision-language-action transformer; see the module docstring for tokens and attention."""

    def __init__(self, config: VLAConfig):
        super().__init__()
        self.config = config
        D = config.n_embd
        self.vision = build_encoder(VISION_ENCODERS, config.vision_encoder, config, "vision")
        self.text = build_encoder(TEXT_ENCODERS, config.text_encoder, config, "text")
        self.instruction_pool = InstructionPool(D) if config.film else None
        self.state_proj = nn.Linear(config.state_dim, config.state_tokens * D) if config.state_dim else None
        self.action_embed = nn.Embedding(config.action_vocab_size, D)
        self.bos = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.action_pos = nn.Parameter(torch.randn(1, config.max_action_tokens, D) * 0.02)
        self.type_embed = nn.Parameter(torch.randn(4, D) * 0.02)
        self.camera_embed = nn.Parameter(torch.randn(len(config.cameras), 1, D) * 0.02)
        self.time_embed = nn.Parameter(torch.randn(config.n_obs_steps, 1, D) * 0.02)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, config.action_vocab_size, bias=False)
        for name, module in self.named_modules():
            if "backbone" not in name.split("."):  # pretrained encoder weights stay as loaded
                self._init_weights(module)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer) so deep stacks start stable.
        for block in self.blocks:
            for linear in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(linear.weight, std=0.02 / (2 * config.n_layer) ** 0.5)
        if config.film:  # FiLM starts as the identity (the generic init above drew its weights)
            self.vision.reset_film()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those that train)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- the prefix: instruction + observations ------------------------------------------------
    def embed_prefix(self, obs: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Observation dict -> ``(tokens (B, P, D), rank (P,) long, valid (B, P) bool)``."""
        c = self.config
        images = _require(obs, "images", 6)
        B, T, N, C, H, W = images.shape
        if images.shape[2:] != (len(c.cameras), 3, c.image_size, c.image_size):
            raise ValueError(
                f"obs['images'] has shape {tuple(images.shape)}; expected (B, T, {len(c.cameras)} cameras "
                f"{list(c.cameras)}, 3, {c.image_size}, {c.image_size})"
            )
        if not 1 <= T <= c.n_obs_steps:
            raise ValueError(f"obs['images'] holds {T} timesteps; the model takes 1..{c.n_obs_steps}")
        device = images.device
        obs_is_pad = obs.get("obs_is_pad")
        obs_valid = torch.ones(B, T, dtype=torch.bool, device=device) if obs_is_pad is None else ~obs_is_pad
        if obs_valid.shape != (B, T):
            raise ValueError(f"obs['obs_is_pad'] has shape {tuple(obs_valid.shape)}, expected {(B, T)}")
        text, text_pad = self._embed_text(obs, B)
        condition = None
        if self.instruction_pool is not None:
            # No instruction: a zero vector, which the zero-initialized FiLM maps treat as "none".
            pooled = images.new_zeros(B, c.n_embd) if text is None else self.instruction_pool(text, text_pad)
            condition = pooled.repeat_interleave(T * N, dim=0)
        time = self.time_embed[c.n_obs_steps - T :]  # the newest step always uses the last embedding

        flat_images = images.reshape(B * T * N, C, H, W)
        patches = self.vision(flat_images) if condition is None else self.vision(flat_images, condition)
        P = patches.shape[1]
        patches = (
            patches.view(B, T, N, P, -1) + self.camera_embed + time.unsqueeze(1) + self.type_embed[IMAGE]
        )
        per_step = [patches.reshape(B, T, N * P, -1)]
        if self.state_proj is not None:
            state = _require(obs, "state", 3)
            if state.shape != (B, T, c.state_dim):
                raise ValueError(
                    f"obs['state'] has shape {tuple(state.shape)}, expected {(B, T, c.state_dim)}"
                )
            state_tokens = (
                self.state_proj(state).view(B, T, c.state_tokens, -1) + time + self.type_embed[STATE]
            )
            per_step.append(state_tokens)
        obs_tokens = torch.cat(per_step, dim=2)  # (B, T, tokens per step, D)
        per_step_count = obs_tokens.shape[2]
        parts = [obs_tokens.flatten(1, 2)]
        ranks = [torch.arange(1, T + 1, device=device).repeat_interleave(per_step_count)]
        valids = [obs_valid.repeat_interleave(per_step_count, dim=1)]

        if text is not None:
            parts.insert(0, text + self.type_embed[TEXT])
            ranks.insert(0, torch.zeros(text.shape[1], dtype=torch.long, device=device))
            valids.insert(0, ~text_pad)
        return torch.cat(parts, dim=1), torch.cat(ranks), torch.cat(valids, dim=1)

    def _embed_text(self, obs: dict[str, Tensor], batch: int) -> tuple[Tensor | None, Tensor | None]:
        """Instruction features (B, L, D) and padding (B, L), or ``(None, None)`` without text."""
        text_tokens = obs.get("text_tokens")
        if text_tokens is None:
            return None, None
        L = text_tokens.shape[1]
        if text_tokens.dim() != 2 or text_tokens.shape[0] != batch or not 0 < L <= self.config.max_text_len:
            raise ValueError(
                f"obs['text_tokens'] has shape {tuple(text_tokens.shape)}; "
                f"expected (B={batch}, L<={self.config.max_text_len})"
            )
        text_is_pad = obs.get("text_is_pad")
        text_pad = torch.zeros_like(text_tokens, dtype=torch.bool) if text_is_pad is None else text_is_pad
        return self.text(text_tokens, text_pad), text_pad

    def embed_actions(self, tokens: Tensor, start: int) -> Tensor:
        """Action-token ids (B, L) at action positions ``start..start+L-1`` -> (B, L, D); position 0 is BOS."""
        return (
            self.action_embed(tokens)
            + self.action_pos[:, start : start + tokens.shape[1]]
            + self.type_embed[ACTION]
        )

    def bos_embedding(self, batch: int) -> Tensor:
        return (self.bos + self.action_pos[:, :1] + self.type_embed[ACTION]).expand(batch, -1, -1)

    @staticmethod
    def attention_mask(prefix_rank: Tensor, prefix_valid: Tensor, num_actions: int) -> Tensor:
        """(B, 1, S, S) boolean mask: query i sees key j iff rank[j] <= rank[i] and j is not padding
        (every token sees itself, so no row is empty)."""
        first_action_rank = int(prefix_rank.max()) + 1 if len(prefix_rank) else 0
        action_rank = first_action_rank + torch.arange(num_actions, device=prefix_rank.device)
        rank = torch.cat([prefix_rank, action_rank])
        valid = torch.cat([prefix_valid, prefix_valid.new_ones(prefix_valid.shape[0], num_actions)], dim=1)
        S = len(rank)
        allowed = (rank[None, :] <= rank[:, None]).unsqueeze(0) & valid[:, None, :]
        allowed = allowed | torch.eye(S, dtype=torch.bool, device=rank.device)
        return allowed.unsqueeze(1)

    # -- training ----------------------------------------------------------------------------
    def hidden_states(self, obs: dict[str, Tensor], action_tokens: Tensor) -> tuple[Tensor, int]:
        """Final hidden states of the whole sequence (B, P + L, D) and the prefix length P."""
        B, L = action_tokens.shape
        if action_tokens.dim() != 2 or not 1 <= L <= self.config.max_action_tokens:
            raise ValueError(
                f"action_tokens has shape {tuple(action_tokens.shape)}; expected (B, L) with "
                f"1 <= L <= max_action_tokens={self.config.max_action_tokens}"
            )
        prefix, rank, valid = self.embed_prefix(obs)
        actions = torch.cat([self.bos_embedding(B), self.embed_actions(action_tokens[:, :-1], 1)], dim=1)
        x = torch.cat([prefix, actions], dim=1)
        mask = self.attention_mask(rank, valid, L)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x), prefix.shape[1]

    def forward(self, obs: dict[str, Tensor], action_tokens: Tensor) -> Tensor:
        """Teacher-forced logits (B, L, V): ``logits[:, i]`` predicts ``action_tokens[:, i]``."""
        hidden, prefix_len = self.hidden_states(obs, action_tokens)
        return self.head(hidden[:, prefix_len:])

    def loss(self, obs: dict[str, Tensor], action_tokens: Tensor, token_mask: Tensor | None = None) -> Tensor:
        """Mean next-token cross-entropy over the action tokens where ``token_mask`` is True."""
        logits = self(obs, action_tokens)
        losses = F.cross_entropy(logits.transpose(1, 2), action_tokens, reduction="none")  # (B, L)
        if token_mask is None:
            return losses.mean()
        weights = token_mask.to(losses.dtype)
        return (losses * weights).sum() / weights.sum().clamp_min(1.0)

    # -- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        obs: dict[str, Tensor],
        num_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        eos_token: int | None = None,
        pad_token: int | None = None,
        suppress_tokens: list[int] | None = None,
        return_logits: bool = False,
        precision: str = "fp32",
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Decode ``num_tokens`` action tokens (B, num_tokens); greedy when ``temperature == 0``.

        ``suppress_tokens`` are never produced; once every row has produced ``eos_token`` decoding
        stops and the rest is ``pad_token``. With ``return_logits`` also returns the (processed)
        logits of every step (B, num_tokens, V). ``precision`` ("fp32", "bf16", or "int8": bf16
        prefix and int8 weight-only decode steps, CPU only) runs a cached low-precision copy of the
        weights (:mod:`vla.model.inference_weights`). See :mod:`vla.model.generation`.
        """
        from vla.model.generation import generate

        return generate(self, obs, num_tokens, temperature, top_k, use_cache, generator, eos_token, pad_token,
                        suppress_tokens, return_logits, precision)  # fmt: skip


def _require(obs: dict[str, Tensor], key: str, ndim: int) -> Tensor:
    if key not in obs:
        raise KeyError(f"the observation batch has no {key!r} entry (keys: {sorted(obs)})")
    value = obs[key]
    if value.dim() != ndim:
        raise ValueError(f"obs[{key!r}] must have {ndim} dimensions, got shape {tuple(value.shape)}")
    return value
