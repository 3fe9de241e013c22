"""The benchmark's non-MLP networks in PyTorch (laplace-torch's side; Keras twins in cases_ours.py)."""

import torch
from sizes import CLASSES, EMBEDDING, HEADS, HIDDEN, LAYER_NORM_EPSILON, VOCABULARY


class LSTMClassifier(torch.nn.Module):
    """Embedding, an LSTM without biases (Keras's LSTM has one bias, torch's two), the last state."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCABULARY, EMBEDDING)
        self.lstm = torch.nn.LSTM(EMBEDDING, HIDDEN, bias=False, batch_first=True)
        self.out = torch.nn.Linear(HIDDEN, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(self.embedding(tokens))
        return self.out(states[:, -1])


class TransformerClassifier(torch.nn.Module):
    """Embedding, one post-norm encoder block (attention, feed-forward), mean over positions."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCABULARY, EMBEDDING)
        self.attention = torch.nn.MultiheadAttention(EMBEDDING, HEADS, batch_first=True)
        self.norm1 = torch.nn.LayerNorm(EMBEDDING, eps=LAYER_NORM_EPSILON)
        self.feed_forward1 = torch.nn.Linear(EMBEDDING, 2 * EMBEDDING)
        self.feed_forward2 = torch.nn.Linear(2 * EMBEDDING, EMBEDDING)
        self.norm2 = torch.nn.LayerNorm(EMBEDDING, eps=LAYER_NORM_EPSILON)
        self.out = torch.nn.Linear(EMBEDDING, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(tokens)
        attended, _ = self.attention(embedded, embedded, embedded, need_weights=False)
        hidden = self.norm1(embedded + attended)
        hidden = self.norm2(hidden + self.feed_forward2(torch.relu(self.feed_forward1(hidden))))
        return self.out(hidden.mean(dim=1))


class PairwiseReward(torch.nn.Module):
    """A 64-32-1 tanh reward model; on pairs ``(B, 2, 64)`` it returns both rewards ``(B, 2)``, as
    laplace-torch's reward modeling expects of the model (items ``(B, 64)`` give ``(B, 1)``)."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            return self.net(x.reshape(-1, x.shape[-1])).reshape(-1, 2)
        return self.net(x)


def two_convolutions(channels: int, width: int, pool: int, flat: int, classes: int) -> torch.nn.Sequential:
    """Two 3x3 convolutions (``width`` then 16 channels, ReLU), max pooling if ``pool > 1``, a Linear."""
    layers = [torch.nn.Conv2d(channels, width, 3), torch.nn.ReLU(), torch.nn.Conv2d(width, 16, 3), torch.nn.ReLU()]
    layers += [torch.nn.MaxPool2d(pool)] if pool > 1 else []
    return torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(flat, classes))


def build(name: str) -> torch.nn.Module:
    if name == "regression":
        return torch.nn.Sequential(torch.nn.Linear(10, 50), torch.nn.Tanh(), torch.nn.Linear(50, 1))
    if name == "cnn":
        return two_convolutions(1, 8, pool=1, flat=256, classes=10)
    if name == "cnn100":
        return two_convolutions(3, 16, pool=4, flat=16 * 7 * 7, classes=100)
    return {"lstm": LSTMClassifier, "transformer": TransformerClassifier, "reward": PairwiseReward}[name]()
