import torch

from libra_cli.sampling import sample_uniformly


def test_takes_everything_when_the_pool_is_not_larger_than_asked():
    pool = torch.tensor([7, 3, 11])
    assert sample_uniformly(pool, 3).tolist() == [7, 3, 11]
    assert sample_uniformly(pool, 10).tolist() == [7, 3, 11]


def test_returns_the_asked_number_of_distinct_pool_members():
    pool = torch.arange(100, 200)
    chosen = sample_uniformly(pool, 25, generator=torch.Generator().manual_seed(0))
    assert chosen.numel() == 25
    assert len(set(chosen.tolist())) == 25
    assert set(chosen.tolist()) <= set(range(100, 200))


def test_zero_or_negative_num_gives_an_empty_result():
    pool = torch.arange(5)
    assert sample_uniformly(pool, 0).numel() == 0
    assert sample_uniformly(pool, -3).numel() == 0


def test_same_seed_same_choice_with_a_generator_and_with_the_global_rng():
    pool = torch.arange(1000)
    a = sample_uniformly(pool, 10, generator=torch.Generator().manual_seed(5))
    b = sample_uniformly(pool, 10, generator=torch.Generator().manual_seed(5))
    assert a.tolist() == b.tolist()
    torch.manual_seed(3)
    c = sample_uniformly(pool, 10)
    torch.manual_seed(3)
    d = sample_uniformly(pool, 10)
    assert c.tolist() == d.tolist()


def test_every_member_is_equally_likely():
    # Choosing 1 of 4, 4000 times: each member should come up about 1000 times (binomial std ≈ 27).
    generator = torch.Generator().manual_seed(0)
    pool = torch.tensor([10, 20, 30, 40])
    counts = {10: 0, 20: 0, 30: 0, 40: 0}
    for _ in range(4000):
        counts[int(sample_uniformly(pool, 1, generator)[0])] += 1
    assert all(850 < c < 1150 for c in counts.values()), counts
