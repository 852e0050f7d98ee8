"""The VLA transformer: one decoder over [instruction][observations t-h+1..t][action tokens].

Sequence (one row of the batch)::

    [text 0..Lt-1] [obs step 0: cam0 tokens, cam1 tokens, ..., state] ... [obs step T-1] [action tokens]

Every token gets a learned modality-type embedding (text, image, state, action); image tokens also get
camera and time embeddings, state tokens time embeddings, text and action tokens position embeddings.

Attention (one boolean mask, ``scaled_dot_product_attention``) follows a *rank* per token: text has
rank 0, observation step k rank k+1, and a token sees every key of equal or lower rank. So the prefix
is bidirectional within a timestep, never sees a later timestep (the instruction is "timestep 0",
visible to all), and no prefix token sees an action token. Padded text tokens and padded
observation steps are masked out as keys.

What the action tokens are is the action head's choice (``VLAConfig.action_head``,
:mod:`vla.model.heads`): discrete tokens decoded one at a time (``ar_bins``, ``ar_fast``: action
token i has rank T+1+i, so actions are causal; input ``[BOS, a0, ..., a_{L-2}]`` predicts
``[a0, ..., a_{L-1}]``), or a whole continuous chunk in parallel (``l1`` regression slots, ``flow``
matching tokens: every action token has rank T+1, so they see each other). Inference encodes the
prefix once into a key/value cache and runs the action tokens against it
(:mod:`vla.model.decoding`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from vla.model.encoders import TEXT_ENCODERS, VISION_ENCODERS, InstructionPool, build_encoder
from vla.model.heads import ACTION_HEADS

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
    # State entries the policy does not read (name patterns, vla.features.kept_state_indices).
    state_exclude: tuple[str, ...] = ()
    film: bool = False  # FiLM-condition the conv vision stem on the pooled instruction (encoders.py)
    keypoints: int = 0  # spatial-softmax keypoint tokens per camera (vision_encoder "keypoints")
    stem_blocks: int = 0  # conv encoder: residual stride-1 convs after each stride-2 stage but the first
    stem_width: int = (
        0  # channels of the first conv stage of the keypoints encoder (0: 16), doubling per stage
    )
    action_head: str = "ar_bins"  # ar_bins | ar_fast | flow | l1 (vla.model.heads)
    flow_steps: int = 10  # Euler steps of the flow head's sampler
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept in the checkpoint

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)  # YAML gives lists
        self.state_exclude = tuple(self.state_exclude)
        if not self.cameras:
            raise ValueError("VLAConfig.cameras must name at least one camera")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.stem_blocks < 0:
            raise ValueError(f"VLAConfig.stem_blocks must be >= 0, got {self.stem_blocks}")
        for name in ("image_size", "patch_size", "action_dim", "n_obs_steps", "horizon", "n_layer",
                     "max_text_len", "max_action_tokens"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"VLAConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.action_head in ("ar_bins", "ar_fast") and self.action_vocab_size < 1:
            raise ValueError(f"a token head needs action_vocab_size >= 1, got {self.action_vocab_size}")
        if self.film and self.vision_encoder not in ("conv", "keypoints"):
            raise ValueError(
                f"VLAConfig.film needs vision_encoder 'conv' or 'keypoints', got {self.vision_encoder!r}"
            )
        if self.action_head not in ACTION_HEADS:
            raise ValueError(
                f"unknown action_head {self.action_head!r}; choose one of {sorted(ACTION_HEADS)}"
            )
        if self.flow_steps < 1:
            raise ValueError(f"VLAConfig.flow_steps must be >= 1, got {self.flow_steps}")
        if self.continuous_actions and self.max_action_tokens < self.horizon:
            raise ValueError(
                f"a continuous head needs max_action_tokens >= horizon ({self.horizon}), got {self.max_action_tokens}"
            )

    @property
    def continuous_actions(self) -> bool:
        """Whether the head predicts the chunk as continuous values (``flow``, ``l1``), not tokens."""
        return self.action_head in ("flow", "l1")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cameras"] = list(self.cameras)
        d["state_exclude"] = list(self.state_exclude)
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
        H = self.n_head
        qkv = self.qkv(x)  # (B, S, 3D) laid out [q | k | v]
        kv = qkv[..., D:]
        if cache is not None:
            # One copy per layer and step: keys and values stay interleaved exactly as qkv made them.
            cache[:, start : start + S] = kv
            kv = cache[:, : start + S]
        q = rearrange(qkv[..., :D], "b s (h d) -> b h s d", h=H)
        k = rearrange(kv[..., :D], "b s (h d) -> b h s d", h=H)
        v = rearrange(kv[..., D:], "b s (h d) -> b h s d", h=H)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.proj(rearrange(y, "b h s d -> b s (h d)"))


class MLP(nn.Module):
    """The block's feed-forward part (nanoGPT's names: ``c_fc``, then GELU, then ``c_proj``)."""

    def __init__(self, config: VLAConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_ratio * config.n_embd)
        self.c_proj = nn.Linear(config.mlp_ratio * config.n_embd, config.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (GPT-2 style)."""

    def __init__(self, config: VLAConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)
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
        self.action_head = ACTION_HEADS[config.action_head](config)
        self.action_pos = nn.Parameter(torch.randn(1, config.max_action_tokens, D) * 0.02)
        self.type_embed = nn.Parameter(torch.randn(4, D) * 0.02)
        self.camera_embed = nn.Parameter(torch.randn(len(config.cameras), 1, D) * 0.02)
        self.time_embed = nn.Parameter(torch.randn(config.n_obs_steps, 1, D) * 0.02)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(D)
        for name, module in self.named_modules():
            if "backbone" not in name.split("."):  # pretrained encoder weights stay as loaded
                self._init_weights(module)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer) so deep stacks start stable.
        for block in self.blocks:
            for linear in (block.attn.proj, block.mlp.c_proj):
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

        flat_images = rearrange(images, "b t n c h w -> (b t n) c h w")
        patches = self.vision(flat_images) if condition is None else self.vision(flat_images, condition)
        patches = rearrange(patches, "(b t n) p d -> b t n p d", b=B, t=T, n=N)
        patches = patches + self.camera_embed + time.unsqueeze(1) + self.type_embed[IMAGE]
        per_step = [rearrange(patches, "b t n p d -> b t (n p) d")]
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
        parts = [rearrange(obs_tokens, "b t k d -> b (t k) d")]
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

    def embed_actions(self, embeddings: Tensor, start: int) -> Tensor:
        """Head-made action inputs (B, L, D) at action positions ``start..start+L-1`` -> token vectors."""
        return embeddings + self.action_pos[:, start : start + embeddings.shape[1]] + self.type_embed[ACTION]

    def action_ranks(self, prefix_rank: Tensor, num_actions: int) -> Tensor:
        """Ranks (num_actions,) of the action tokens: above every prefix rank; increasing (causal)
        for a token head, all equal (bidirectional) for a continuous one. Tensor arithmetic only, so
        export can trace it (no data-dependent Python int)."""
        first = prefix_rank.max() + 1 if prefix_rank.numel() else prefix_rank.new_zeros(())
        steps = torch.arange(num_actions, device=prefix_rank.device)
        return first + (steps if self.action_head.causal else torch.zeros_like(steps))

    def attention_mask(self, prefix_rank: Tensor, prefix_valid: Tensor, num_actions: int) -> Tensor:
        """(B, 1, S, S) boolean mask: query i sees key j iff rank[j] <= rank[i] and j is not padding
        (every token sees itself, so no row is empty)."""
        rank = torch.cat([prefix_rank, self.action_ranks(prefix_rank, num_actions)])
        valid = torch.cat([prefix_valid, prefix_valid.new_ones(prefix_valid.shape[0], num_actions)], dim=1)
        S = len(rank)
        allowed = (rank[None, :] <= rank[:, None]).unsqueeze(0) & valid[:, None, :]
        allowed = allowed | torch.eye(S, dtype=torch.bool, device=rank.device)
        return allowed.unsqueeze(1)

    # -- training ----------------------------------------------------------------------------
    def run(self, obs: dict[str, Tensor], action_inputs: Tensor) -> tuple[Tensor, int]:
        """Final hidden states (B, P + L, D) of the prefix followed by the head's action inputs
        (B, L, D) (:meth:`heads.*.train_inputs`), and the prefix length P."""
        L = action_inputs.shape[1]
        if not 1 <= L <= self.config.max_action_tokens:
            raise ValueError(
                f"{L} action tokens; the model takes 1..max_action_tokens={self.config.max_action_tokens}"
            )
        prefix, rank, valid = self.embed_prefix(obs)
        x = torch.cat([prefix, self.embed_actions(action_inputs, 0)], dim=1)
        mask = self.attention_mask(rank, valid, L)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x), prefix.shape[1]

    def hidden_states(self, obs: dict[str, Tensor], targets: Tensor) -> tuple[Tensor, int]:
        """:meth:`run` on the head's training inputs for ``targets`` (token ids or a chunk)."""
        self._check_targets(targets)
        return self.run(obs, self.action_head.train_inputs(targets)[0])

    def forward(self, obs: dict[str, Tensor], action_tokens: Tensor) -> Tensor:
        """Token heads: teacher-forced logits (B, L, V), ``logits[:, i]`` predicts ``action_tokens[:, i]``."""
        if self.config.continuous_actions:
            raise TypeError(f"forward() gives token logits; the {self.config.action_head!r} head has none")
        hidden, prefix_len = self.hidden_states(obs, action_tokens)
        return self.action_head.out(hidden[:, prefix_len:])

    def loss(self, obs: dict[str, Tensor], targets: Tensor, mask: Tensor | None = None) -> Tensor:
        """The head's training loss: ``targets`` are token ids (B, L) for a token head (``mask``: real
        tokens), normalized chunks (B, H, A) for a continuous head (``mask`` (B, H): steps to count)."""
        self._check_targets(targets)
        inputs, context = self.action_head.train_inputs(targets)
        hidden, prefix_len = self.run(obs, inputs)
        return self.action_head.loss(hidden[:, prefix_len:], targets, mask, context)

    def _check_targets(self, targets: Tensor) -> None:
        c = self.config
        if c.continuous_actions:
            expected = f"(B, {c.horizon}, {c.action_dim}) float"
            ok = targets.dim() == 3 and tuple(targets.shape[1:]) == (c.horizon, c.action_dim)
        else:
            expected = f"(B, L) int64 with 1 <= L <= max_action_tokens={c.max_action_tokens}"
            ok = targets.dim() == 2 and 1 <= targets.shape[1] <= c.max_action_tokens
        if not ok:
            raise ValueError(
                f"action targets have shape {tuple(targets.shape)}; the {c.action_head!r} head expects {expected}"
            )

    # -- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, obs: dict[str, Tensor], options: Any = None, *, precision: str = "fp32", use_cache: bool = True
    ) -> Tensor:
        """The head's prediction for ``obs``: token ids (B, L) for a token head (greedy unless
        ``options`` (:class:`vla.model.decoding.DecodeOptions`) says otherwise), the normalized chunk
        (B, H, A) for a continuous head. ``precision`` ("fp32", "bf16", or "int8": bf16 prefix and
        int8 weight-only steps, CPU only) runs a cached low-precision copy of the weights
        (:mod:`vla.model.inference_weights`). See :mod:`vla.model.decoding`."""
        from vla.model.decoding import decode

        return decode(self, obs, options, precision=precision, use_cache=use_cache)


def _require(obs: dict[str, Tensor], key: str, ndim: int) -> Tensor:
    if key not in obs:
        raise KeyError(f"the observation batch has no {key!r} entry (keys: {sorted(obs)})")
    value = obs[key]
    if value.dim() != ndim:
        raise ValueError(f"obs[{key!r}] must have {ndim} dimensions, got shape {tuple(value.shape)}")
    return value
