"""The char-rnn bench's PyTorch trainer: `nn.LSTM`, the state carried and detached between
windows, as a PyTorch user writes truncated backprop by hand.

The layers start as Keras starts the same layers (`keras_initialised`), and Adam has Keras's
epsilon: the two Keras trainers and this one then differ in how they train, not in where
they start, and their validation losses can be compared. Measured after two epochs: 2.40
bits per character from Keras's initialisation, 2.76 from PyTorch's own (uniform within
1/sqrt(128)), and 2.43 for the two Keras trainers.

    python bench/char_torch.py CORPUS EPOCHS

Prints one JSON object: the windows trained, the training seconds (in all, and of
the last epoch), the validation figures (`char_data.summary`) and a sample.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import char_data as data
import numpy as np
import torch
from torch import nn
from torch.nn import functional


class CharModel(nn.Module):
    """One-hot characters -> 2 x LSTM(128) -> Linear(vocab) logits."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.lstm = nn.LSTM(vocab, data.STATE_SIZE, num_layers=data.NUM_LAYERS, batch_first=True)
        self.logits = nn.Linear(data.STATE_SIZE, vocab)
        keras_initialised(self)

    def forward(self, symbols, state=None):
        hidden, state = self.lstm(functional.one_hot(symbols, self.vocab).float(), state)
        return self.logits(hidden), state


@torch.no_grad()
def keras_initialised(model: CharModel) -> None:
    """Keras's initialisers for `model`'s layers: Glorot-uniform input kernels and Dense
    kernel, orthogonal recurrent kernels, zero biases but the forget gate's, which starts at 1
    (`unit_forget_bias`). Both use the gate order input, forget, cell, output; PyTorch's second
    bias (`bias_hh`), which Keras has not, stays at zero."""
    units = data.STATE_SIZE
    for name, parameter in model.lstm.named_parameters():
        if name.startswith("weight_ih"):
            nn.init.xavier_uniform_(parameter)
        elif name.startswith("weight_hh"):
            nn.init.orthogonal_(parameter)
        else:
            parameter.zero_()
            if name.startswith("bias_ih"):
                parameter[units : 2 * units] = 1.0
    nn.init.xavier_uniform_(model.logits.weight)
    model.logits.bias.zero_()


def detached(state):
    return tuple(part.detach() for part in state)


def train(model: CharModel, inputs: np.ndarray, targets: np.ndarray, epochs: int) -> list:
    """Train `epochs` epochs, the state zeroed at each epoch start; return each epoch's seconds."""
    optimizer = torch.optim.Adam(model.parameters(), lr=data.LEARNING_RATE, eps=1e-7)
    inputs, targets = torch.from_numpy(inputs).long(), torch.from_numpy(targets).long()
    seconds = []
    model.train()
    for _ in range(epochs):
        started, state = time.perf_counter(), None
        for x, y in zip(inputs, targets, strict=True):
            logits, state = model(x, state)
            state = detached(state)  # carried to the next window, gradients stop here
            loss = functional.cross_entropy(logits.reshape(-1, model.vocab), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - started)
    return seconds


@torch.no_grad()
def position_losses(model: CharModel, inputs, targets, reset_each_window: bool) -> np.ndarray:
    """Cross-entropy (nats) at every position of every window, (windows, batch, window)."""
    model.eval()
    state, out = None, []
    for x, y in zip(torch.from_numpy(inputs).long(), torch.from_numpy(targets).long(), strict=True):
        logits, state = model(x, None if reset_each_window else state)
        losses = functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")
        out.append(losses.numpy())
    return np.stack(out)


@torch.no_grad()
def generate(model: CharModel, alphabet: str) -> str:
    model.eval()
    state = None

    def step(symbol: int) -> np.ndarray:
        nonlocal state
        logits, state = model(torch.tensor([[symbol]]), state)
        return logits[0, -1].numpy()

    return data.sample(step, alphabet)


def main(corpus: Path, epochs: int) -> None:
    torch.set_num_threads(data.threads())
    torch.manual_seed(data.SEED)
    alphabet, symbols = data.read_corpus(corpus)
    training, validation = data.split(symbols)
    inputs, targets = data.windows(training)
    model = CharModel(len(alphabet))
    seconds = train(model, inputs, targets, epochs)
    val_inputs, val_targets = data.windows(validation)
    carried = position_losses(model, val_inputs, val_targets, reset_each_window=False)
    reset = position_losses(model, val_inputs, val_targets, reset_each_window=True)
    result = {
        "windows": epochs * len(inputs),
        "epoch_windows": len(inputs),
        "train_seconds": sum(seconds),
        "epoch_seconds": seconds,
        **data.summary(carried, reset),
        "sample": generate(model, alphabet),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
