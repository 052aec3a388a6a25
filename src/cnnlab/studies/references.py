"""Reference training loops for `cnnlab bench`: plain PyTorch, no cnnlab imports.

``naive``: the way tutorials write it — torchvision's FashionMNIST (or MNIST) dataset, a DataLoader
(batch 64, shuffle), ToTensor + Normalize, Adam lr 1e-3.
``resident``: what a careful engineer writes by hand — the whole (normalised) dataset as
one tensor on the device, randperm batches of 256, bf16 autocast on CUDA, fused Adam, eager.

Both train the article's LeNet-5 and are generators: each ``next()`` runs one training
epoch and one test pass and yields that epoch's figures, so a driver can interleave them
with other loops epoch by epoch (shared machines load them alike).
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class LeNet5(nn.Module):
    """The article's LeNet-5: conv 6@5×5 pad 2 → tanh → max-pool → conv 16@5×5 → tanh →
    max-pool → FC 256 → ReLU → FC 128 → ReLU → FC 10."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 256),
            nn.ReLU(),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.net(x)


def torchvision_root(
    idx_dir: str | os.PathLike, tmp: str | os.PathLike, dataset: str = "FashionMNIST"
) -> Path:
    """Lay the IDX files out the way torchvision's ``dataset`` class (FashionMNIST or
    MNIST) expects (``<root>/<dataset>/raw/<name>`` unpacked) without downloading;
    returns root."""
    idx_dir, root = Path(idx_dir), Path(tmp)
    raw = root / dataset / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        dest = raw / name
        if dest.is_file():
            continue
        if (idx_dir / name).is_file():
            os.symlink((idx_dir / name).resolve(), dest)
        else:
            with gzip.open(idx_dir / f"{name}.gz", "rb") as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
    return root


def _evaluate(model, batches, device, autocast) -> float:
    model.eval()
    correct = n = 0
    with torch.no_grad():
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            with autocast():
                correct += (model(x).argmax(1) == y).sum().item()
            n += len(y)
    model.train()
    return correct / max(n, 1)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _epochs(device, train_epoch, evaluate):
    """Each ``next()``: one timed ``train_epoch()`` (returns the images it saw), then
    ``evaluate()`` (test accuracy), timed apart; yields the epoch's figures."""
    epoch = 0
    while True:
        epoch += 1
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        n = train_epoch()
        _sync(device)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        te = time.perf_counter()
        acc = evaluate()
        yield {
            "epoch": epoch,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "images": n,
            "test_acc": acc,
            "eval_seconds": time.perf_counter() - te,
        }


def _tv_dataset(name: str):
    import torchvision

    if name not in ("FashionMNIST", "MNIST"):
        raise ValueError(f"reference loops read FashionMNIST or MNIST, not {name!r}")
    return getattr(torchvision.datasets, name)


def naive(
    root,
    device="cpu",
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 1e-3,
    dataset: str = "FashionMNIST",
    mean: float = MEAN,
    std: float = STD,
):
    """Tutorial loop over torchvision's ``dataset`` at ``root`` (see torchvision_root)."""
    from torchvision import transforms

    device = torch.device(device)
    torch.manual_seed(seed)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    cls = _tv_dataset(dataset)
    train_set = cls(root, train=True, transform=tf, download=False)
    test_set = cls(root, train=False, transform=tf, download=False)
    train_dl = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True)
    test_dl = torch.utils.data.DataLoader(test_set, batch_size=1000)
    model = LeNet5().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    ac = _autocast(device)

    def train_epoch() -> int:
        n = 0
        for x, y in train_dl:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            n += len(y)
        return n

    yield from _epochs(device, train_epoch, lambda: _evaluate(model, test_dl, device, ac))


def resident(
    root,
    device="cpu",
    seed: int = 0,
    batch_size: int = 256,
    lr: float = 1e-3,
    dataset: str = "FashionMNIST",
    mean: float = MEAN,
    std: float = STD,
):
    """Hand-written resident loop: the normalised dataset is one device tensor."""
    device = torch.device(device)
    torch.manual_seed(seed)
    cls = _tv_dataset(dataset)

    def tensors(train: bool):
        ds = cls(root, train=train, download=False)
        x = ds.data.to(device).unsqueeze(1).float().div_(255).sub_(mean).div_(std)  # (N,1,28,28)
        return x, ds.targets.to(device)

    xtr, ytr = tensors(True)
    xte, yte = tensors(False)
    model = LeNet5().to(device)
    try:
        opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except RuntimeError:  # fused Adam unsupported on this device/build
        opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
    loss_fn = nn.CrossEntropyLoss()
    ac = _autocast(device)
    g = torch.Generator(device=device).manual_seed(seed)

    def train_epoch() -> int:
        perm = torch.randperm(len(xtr), device=device, generator=g)
        n = 0
        for i in range(0, len(perm), batch_size):
            j = perm[i : i + batch_size]
            x, y = xtr[j], ytr[j]
            with ac():
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(j)
        return n

    def test():
        batches = ((xte[i : i + 1000], yte[i : i + 1000]) for i in range(0, len(xte), 1000))
        return _evaluate(model, batches, device, ac)

    yield from _epochs(device, train_epoch, test)


LOOPS = {"naive": naive, "resident": resident}
