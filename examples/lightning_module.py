"""A LightningModule for ``learner = "lightning"`` (examples/frameworks.toml).

calipers builds it as ``LitCNN(input_shape=..., n_outputs=..., **args)`` and trains it with a
fresh ``lightning.Trainer`` per fold; the module owns its loss, optimizer and schedule.
"""

import lightning
import torch
from torch import nn


class LitCNN(lightning.LightningModule):
    """Two conv layers, max pooling, dropout, a linear head; AdamW with a cosine schedule."""

    def __init__(self, input_shape, n_outputs, channels=16, dropout=0.1, lr=2e-3):
        super().__init__()
        c, h, w = input_shape
        self.lr = lr
        self.net = nn.Sequential(
            nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(2 * channels * (h // 2) * (w // 2), 4 * channels), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(4 * channels, n_outputs))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)
        return {"optimizer": opt, "lr_scheduler": sched}
