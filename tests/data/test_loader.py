import torch

from cnnlab.data import augment
from cnnlab.data.loader import ResidentLoader


def test_batches_cover_epoch_and_normalise():
    x = torch.randint(0, 256, (100, 1, 8, 8), dtype=torch.uint8)
    y = torch.arange(100)
    g = torch.Generator().manual_seed(0)
    ld = ResidentLoader(x, y, 32, (0.5,), (0.25,), shuffle=True, drop_last=True, generator=g)
    assert len(ld) == 3
    seen = torch.cat([yb for _, yb in ld])
    assert len(seen) == 96 and len(set(seen.tolist())) == 96
    ev = ResidentLoader(x, y, 32, (0.5,), (0.25,))
    xb, yb = next(iter(ev))
    torch.testing.assert_close(xb, (x[:32].float() / 255 - 0.5) / 0.25)
    assert len(ev) == 4 and sum(len(b) for _, b in ev) == 100


def test_resize_and_grayscale():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    ld = ResidentLoader(
        x,
        torch.zeros(4, dtype=torch.long),
        4,
        (0.5, 0.5, 0.5),
        (0.2, 0.2, 0.2),
        resize=64,
        grayscale=True,
    )
    xb, _ = next(iter(ld))
    assert xb.shape == (4, 1, 64, 64)


def test_random_crop_shifts_content():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1
    out = augment.random_crop(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)))  # pad 2 keeps the blob inside
    assert len({tuple(o.nonzero()[0].tolist()) for o in out}) > 5


def test_flip_and_erase():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(200, 1, 1, 1)
    f = augment.random_flip(x, torch.Generator().manual_seed(0))
    flipped = (f[:, 0, 0, 0] == 3).float().mean()
    assert 0.3 < flipped < 0.7
    e = augment.random_erase(
        torch.ones(200, 1, 16, 16), p=1.0, generator=torch.Generator().manual_seed(0)
    )
    assert (e == 0).any((1, 2, 3)).all()


def test_balanced_order_draws_classes_equally_and_replays_from_the_generator():
    from cnnlab.data.loader import ResidentLoader

    y = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    x = torch.zeros(1000, 1, 2, 2, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    ld = ResidentLoader(x, y, 100, 0.0, 1.0, shuffle=True, drop_last=True, generator=g,
                        balanced=True)  # fmt: skip
    state = g.get_state()
    order = ld.order()
    assert len(order) == 1000 and len(ld) == 10
    share = torch.bincount(y[order], minlength=3) / 1000
    assert (share - 1 / 3).abs().max() < 0.05  # 90 % / 9 % / 1 % in the data
    g.set_state(state)  # a resumed epoch: the generator's state at its start
    assert torch.equal(ld.order(), order)
    plain = ResidentLoader(x, y, 100, 0.0, 1.0, shuffle=True, generator=g)
    assert sorted(plain.order().tolist()) == list(range(1000))  # random: a permutation


def test_balanced_sampler_is_seeded_by_epoch_and_shares_one_draw_between_ranks():
    from cnnlab.data.loader import BalancedSampler

    y = [0] * 300 + [1] * 30
    one = BalancedSampler(y, seed=3)
    one.set_epoch(1)
    full = one.indices()
    assert len(one) == 330 and torch.equal(one.indices(), full)
    share = torch.bincount(torch.tensor(y)[full], minlength=2) / 330
    assert (share - 0.5).abs().max() < 0.1
    one.set_epoch(2)
    assert not torch.equal(one.indices(), full)
    ranks = [BalancedSampler(y, seed=3, rank=r, world=2) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(1)
    a, b = (list(s) for s in ranks)
    assert len(a) == len(b) == 165
    assert torch.equal(torch.stack([torch.tensor(a), torch.tensor(b)], 1).flatten(), full)
