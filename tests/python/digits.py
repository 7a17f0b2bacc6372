"""A real small problem that needs no download: scikit-learn's bundled 8x8
digits (1797 images, 10 classes), split 1500 train / 297 validation."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def load():
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return (x[:1500], y[:1500]), (x[1500:], y[1500:])


def mlp():
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def val_loss(model, val):
    with torch.no_grad():
        return float(F.cross_entropy(model(val[0]), val[1]))
