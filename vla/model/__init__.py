"""The model: tokenizers (image, state, text, action) and the one shared transformer.

- :mod:`vla.model.model`: ``VLAConfig`` and ``VLA`` (forward / loss / generate);
- :mod:`vla.model.heads`: the action heads (``ar_bins``, ``ar_fast``, ``l1``, ``flow``);
- :mod:`vla.model.action_tokenizers`: ``binning`` and ``fast`` action tokenizers and the
  ``continuous`` codec of the continuous heads (registry);
- :mod:`vla.model.text_tokenizer`: the word-level instruction tokenizer;
- :mod:`vla.model.encoders`: image and text encoders, with hooks for local pretrained weights;
- :mod:`vla.model.decoding`: the one KV-cached decoder for every head (eager and export forms);
- :mod:`vla.model.inference_weights`: the fp32 / bf16 / int8 weights the decoder's steps run on.
"""

from vla.model.action_tokenizers import (
    ACTION_TOKENIZERS,
    DecodeReport,
    action_tokenizer_from_state_dict,
    make_action_tokenizer,
)
from vla.model.model import VLA, VLAConfig
from vla.model.text_tokenizer import TextTokenizer

__all__ = [
    "ACTION_TOKENIZERS",
    "VLA",
    "DecodeReport",
    "TextTokenizer",
    "VLAConfig",
    "action_tokenizer_from_state_dict",
    "make_action_tokenizer",
]
