"""Randomly initialised transformers models and self-built tokenizers, for tests and benchmarks of the
``hf`` backend where no weights may be downloaded. Not a model anyone should sample answers from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["CHATML", "QWEN25_05B", "bpe_tokenizer", "id_tokenizer", "qwen2_model", "save_tiny"]

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

QWEN25_05B: dict[str, Any] = {
    "vocab_size": 151936, "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
    "num_key_value_heads": 2, "intermediate_size": 4864, "max_position_embeddings": 32768,
    "tie_word_embeddings": True, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
}
"""The shape of Qwen2.5-0.5B (494M parameters with tied embeddings)."""

_CORPUS = [
    "The answer is 42.", "Let's think step by step.", "2 + 2 = 4, so the answer is 4.",
    "Natalia sold 48 clips in April and half as many in May.", "Therefore the total is 72.",
    "Question: what is 7 times 6? Answer: 42", "We add the numbers: 10 + 15 = 25.",
]


def bpe_tokenizer(vocab_size: int = 320, corpus: list[str] | None = None) -> Any:
    """A byte-level BPE tokenizer trained in memory on a few sentences, with a ChatML template and
    ``<|im_end|>`` as end of sequence (any text encodes; offsets are exact)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                         "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator((corpus or _CORPUS) * 4, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    return tok


def id_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer whose tokens are ``t0 .. t{V-1}`` separated by spaces (token ids only:
    for benchmarks of real-shaped random models). No end-of-sequence token, no chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="t0")


def qwen2_model(vocab_size: int, *, seed: int = 0, dtype: Any = None, device: Any = None, eos: int | None = None,
                **config: Any) -> Any:
    """A Qwen2-style causal LM with random weights (seeded); ``config`` overrides a tiny default shape."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape: dict[str, Any] = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                             "num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 512,
                             "tie_word_embeddings": False}
    shape.update(config)
    cfg = Qwen2Config(vocab_size=vocab_size, eos_token_id=eos, bos_token_id=None, pad_token_id=None, **shape)
    torch.manual_seed(seed)
    if device is not None or dtype is not None:
        with torch.device(device or "cpu"):
            model = Qwen2ForCausalLM(cfg)
        model = model.to(dtype=dtype) if dtype is not None else model
    else:
        model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    return model.eval()


def save_tiny(path: str | Path, *, seed: int = 0, **config: Any) -> Path:
    """Build a BPE tokenizer and a matching tiny Qwen2 model and ``save_pretrained`` both into ``path``."""
    out = Path(path)
    tok = bpe_tokenizer()
    model = qwen2_model(len(tok), seed=seed, eos=tok.eos_token_id, **config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
