"""Bring your own training recipe: a hand-written PyTorch loop for ``learner = "function"``.

calipers calls ``fit(data, seed=..., device=..., settings=..., **args)`` once per fold, with
the fold's training samples only, and evaluates the returned network on the fold's test
samples (MC dropout, metrics, the comparison) exactly as it does its own networks. This recipe
differs from calipers' loop in everything but the data: its own network, SGD with Nesterov
momentum, a cosine learning-rate schedule with warm-up and random-shift augmentation.

Used by examples/frameworks.toml::

    [networks.recipe]
    learner = "function"
    fit = "torch_recipe:fit"
    model = "torch_recipe:Net"   # optional: rebuilds the network to load its folds back
    args = { width = 16, dropout = 0.25 }
    train = { epochs = 20, lr = 0.05, momentum = 0.9 }
"""

import math

import torch
from torch import nn


class Net(nn.Module):
    """Two conv layers, max pooling, two dropout + linear layers (logits)."""

    def __init__(self, input_shape, n_outputs: int, width: int, dropout: float):
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten())
        n_feat = 2 * width * (h // 2) * (w // 2)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_feat, 4 * width), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(4 * width, n_outputs))

    def forward(self, x):
        return self.head(self.features(x))


def shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in each direction (zero padding)."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
    idx = torch.arange(n)[:, None, None, None]
    ch = torch.arange(x.shape[1])[None, :, None, None]
    return padded[idx, ch, rows, cols]


def fit(data, *, seed, device, settings, width=16, dropout=0.25):
    """Train :class:`Net` on one fold's training samples; return it (it returns logits).

    data : calipers.learners.FoldData (X (N, C, H, W) float32, y class indices, n_outputs)
    seed : int, this network's and fold's seed (torch's global generator is seeded with it)
    device : str, where to train
    settings : calipers.learners.FitSettings (epochs, batch_size, lr, weight_decay; extra holds
        momentum and warmup from [networks.NAME.train])
    """
    gen = torch.Generator().manual_seed(seed)
    model = Net(data.input_shape, data.n_outputs, width, dropout).to(device)
    momentum = float(settings.extra.get("momentum", 0.9))
    warmup = int(settings.extra.get("warmup", 1))
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=momentum, nesterov=True,
                          weight_decay=settings.weight_decay)
    X = torch.as_tensor(data.X, dtype=torch.float32)
    y = torch.as_tensor(data.y, dtype=torch.long)
    steps_per_epoch = math.ceil(len(X) / settings.batch_size)
    total = settings.epochs * steps_per_epoch

    def lr_factor(step):  # linear warm-up, then cosine decay to zero
        if step < warmup * steps_per_epoch:
            return (step + 1) / (warmup * steps_per_epoch)
        t = (step - warmup * steps_per_epoch) / max(1, total - warmup * steps_per_epoch)
        return 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=float(settings.extra.get("smoothing", 0.0)))
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(X), generator=gen)
        for start in range(0, len(X), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            xb = shift(X[idx], gen).to(device)
            loss = loss_fn(model(xb), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model
