"""A user plug-in: a small Transformer on a synthetic, translation-like token task (the paper's App. D.4 sweeps
Transformers on IWSLT De-En; this is a CPU-sized stand-in that ships with the code).

Nothing here imports landscape: it is what a user writes and names in a sweep config (translate.yaml):

    workload:
      model: seqnets:transformer          # fn(width, num_classes, input_shape, **model_args) -> nn.Module
      dataset: seqnets:reorder_translation  # fn(root, seed, **dataset_args) -> (train_x, train_y, test_x, test_y)

The task. A source "sentence" is ``length`` tokens from a vocabulary of ``vocab`` words. Its "translation" has
the same length, in reversed word order, and every word is translated by one of two dictionaries chosen by
the previous source word's parity (a word's meaning depends on its context):

    target[i] = dictionary[source[j - 1] % 2][source[j]]      with j = length - 1 - i, source[-1] := 0

so a model must attend across the sentence (reordering) and to a neighbour (disambiguation). Inputs and
targets are integer tokens: x (n, length) int64, y (n, length) int64; the model maps (B, length) tokens to
(B, length, vocab) logits, and every target token is one classification (loss and accuracy are per token).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def reorder_translation(root=None, seed: int = 0, *, train_size: int = 2000, test_size: int = 500,
                        length: int = 8, vocab: int = 16):
    """(train_x, train_y, test_x, test_y): integer token tensors of shape (n, length), see the module doc.

    Deterministic in (seed, sizes); ``root`` is unused (the data is generated). Both dictionaries are random
    permutations of the vocabulary drawn from ``seed``, so the task has a unique right answer per sentence.
    """
    gen = torch.Generator().manual_seed(int(seed))
    dictionaries = torch.stack([torch.randperm(vocab, generator=gen) for _ in range(2)])  # (2, vocab)

    def sentences(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        source = torch.randint(0, vocab, (n, length), generator=gen)
        reversed_source = source.flip(1)  # word order of the translation
        previous = torch.cat([torch.zeros(n, 1, dtype=torch.long), source[:, :-1]], dim=1).flip(1)
        target = dictionaries[previous % 2, reversed_source]
        return source, target

    train_x, train_y = sentences(train_size)
    test_x, test_y = sentences(test_size)
    return train_x, train_y, test_x, test_y


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (softmax(QK^T / sqrt(d)) V): twice differentiable, which the
    Hessian metrics need (fused attention kernels do not all support double backward)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be a multiple of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, W) -> (B, T, W)
        b, t, w = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(w // self.heads), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, w))


class Block(nn.Module):
    """Pre-norm Transformer block: x + attention(LN(x)), then x + MLP(LN(x)). No dropout (runs are seeded)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = SelfAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """(B, T) tokens -> token + position embeddings -> depth blocks -> LN -> Linear -> (B, T, num_classes)."""

    def __init__(self, width: int, num_classes: int, length: int, vocab: int, depth: int, heads: int):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Parameter(torch.randn(length, width) * 0.02)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tokens(tokens) + self.positions[: tokens.shape[1]]
        return self.head(self.norm(self.blocks(x)))


def transformer(*, width: int, num_classes: int, input_shape: tuple, depth: int = 2, heads: int = 2,
                vocab: int | None = None) -> nn.Module:
    """The sweep's model function: ``width`` is the model dimension (the load knob of a width sweep).

    input_shape: (length,) of one token sequence; vocab: source vocabulary size (default: num_classes, as in
    reorder_translation, whose source and target vocabularies have the same size).
    """
    (length,) = input_shape
    return Transformer(width, num_classes, length, vocab or num_classes, depth, heads)
