"""Events -> frames against a plain-loop reference, and the event transforms (on events and on frames)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from datafmt_writers import random_events
from spikeforge.data import (Compose, Denoise, Downsample, RandomCrop, RandomFlip, RandomRoll, TimeJitter, ToFrame,
                             events_to_frames, make_events)


def frames_reference(ev, sensor, n_time_bins=None, time_window=None, split_by="time"):
    """One event at a time, in plain Python integers: the definition in spikeforge.data.frames."""
    W, H, P = sensor
    n = len(ev)
    ts = [int(t) for t in ev["t"]]
    if split_by == "number":
        T = n_time_bins
        di = n // T
        bins = [T - 1 if di == 0 else min(k // di, T - 1) for k in range(n)]
    elif time_window is not None:
        t0 = ts[0] if n else 0
        bins = [(t - t0) // time_window for t in ts]
        T = n_time_bins if n_time_bins is not None else (bins[-1] + 1 if n else 1)
    else:
        T = n_time_bins
        t0, t1 = (ts[0], ts[-1]) if n else (0, 0)
        bins = [(t - t0) * T // (t1 - t0 + 1) for t in ts]
    out = np.zeros((T, P, H, W), np.float32)
    for k in range(n):
        b = bins[k]
        if 0 <= b < T:
            out[b, int(ev["p"][k]) if P > 1 else 0, int(ev["y"][k]), int(ev["x"][k])] += 1
    return out


CASES = [
    dict(n_time_bins=1), dict(n_time_bins=7), dict(n_time_bins=16, split_by="number"), dict(n_time_bins=3, split_by="number"),
    dict(time_window=10_000), dict(time_window=33_333, n_time_bins=4), dict(time_window=997),
]


@pytest.mark.parametrize("kw", CASES)
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("sensor", [(34, 34, 2), (128, 128, 2), (700, 1, 1), (5, 3, 2)])
def test_frames_match_plain_loop(kw, seed, sensor):
    rng = np.random.default_rng(seed)
    ev = random_events(rng, int(rng.integers(1, 3000)), sensor, t_max=int(rng.integers(1, 400_000)))
    np.testing.assert_array_equal(events_to_frames(ev, sensor, **kw), frames_reference(ev, sensor, **kw))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_frames_match_plain_loop_hypothesis(data):
    n = data.draw(st.integers(0, 60))
    W, H = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    P = data.draw(st.sampled_from([1, 2]))
    ts = sorted(data.draw(st.lists(st.integers(0, 10**7), min_size=n, max_size=n)))
    ev = make_events(data.draw(st.lists(st.integers(0, W - 1), min_size=n, max_size=n)),
                     data.draw(st.lists(st.integers(0, H - 1), min_size=n, max_size=n)), ts,
                     data.draw(st.lists(st.integers(0, P - 1), min_size=n, max_size=n)))
    kw = data.draw(st.sampled_from(CASES))
    np.testing.assert_array_equal(events_to_frames(ev, (W, H, P), **kw), frames_reference(ev, (W, H, P), **kw))


def test_frames_bad_arguments():
    ev = make_events([0, 1], [0, 0], [5, 1], [0, 1])
    with pytest.raises(ValueError, match="not sorted"):
        events_to_frames(ev, (2, 2, 2), time_window=1)
    with pytest.raises(ValueError, match="n_time_bins"):
        events_to_frames(ev, (2, 2, 2))
    with pytest.raises(ValueError, match="outside the 1x1 sensor"):
        events_to_frames(make_events([1], [0], [0], [0]), (1, 1, 2), n_time_bins=1)
    with pytest.raises(ValueError, match="larger time_window"):
        events_to_frames(make_events([0, 0], [0, 0], [0, 10**12], [0, 0]), (128, 128, 2), time_window=1)
    with pytest.raises(ValueError, match="split_by"):
        ToFrame((2, 2, 2), n_time_bins=2, split_by="count")
    assert events_to_frames(ev[:0], (2, 2, 2), n_time_bins=3).shape == (3, 2, 2, 2)


def test_to_frame_returns_float_tensor():
    ev = random_events(np.random.default_rng(0), 100, (34, 34, 2))
    f = ToFrame((34, 34, 2), n_time_bins=5)(ev)
    assert isinstance(f, torch.Tensor) and f.dtype == torch.float32 and f.shape == (5, 2, 34, 34)
    assert float(f.sum()) == 100


def denoise_reference(ev, sensor, filter_time):
    W, H, _ = sensor
    last = {}
    keep = []
    for x, y, t in zip(ev["x"].tolist(), ev["y"].tolist(), ev["t"].tolist()):
        ok = any(t - last[(x + dx, y + dy)] <= filter_time for dx in (-1, 0, 1) for dy in (-1, 0, 1)
                 if (dx or dy) and (x + dx, y + dy) in last)
        keep.append(ok)
        last[(x, y)] = t
    return ev[np.array(keep, bool)]


@pytest.mark.parametrize("seed", range(3))
def test_denoise_matches_reference(seed):
    rng = np.random.default_rng(seed)
    ev = random_events(rng, 3000, (16, 12, 2), t_max=200_000)
    for ft in (1, 1000, 20_000):
        got = Denoise((16, 12, 2), ft)(ev)
        want = denoise_reference(ev, (16, 12, 2), ft)
        np.testing.assert_array_equal(got, want)


def test_downsample():
    ev = random_events(np.random.default_rng(1), 500, (34, 34, 2))
    d = Downsample((34, 34, 2), factor=(2, 3))
    out = d(ev)
    assert d.out_sensor_size == (17, 12, 2)
    np.testing.assert_array_equal(out["x"], ev["x"] // 2)
    np.testing.assert_array_equal(out["y"], ev["y"] // 3)
    assert out["x"].max() < 17 and out["y"].max() < 12
    np.testing.assert_array_equal(ev["x"], random_events(np.random.default_rng(1), 500, (34, 34, 2))["x"])  # input kept


@pytest.mark.parametrize("make", [
    lambda s: RandomFlip(s, p_x=0.5, p_y=0.5, p_polarity=0.5),
    lambda s: RandomRoll(s, max_shift=5),
    lambda s: RandomCrop(s, size=(20, 13)),
])
def test_spatial_transforms_commute_with_frames(make):
    """frames(T(events)) == T(frames(events)) for the same random draw."""
    sensor = (34, 30, 2)
    ev = random_events(np.random.default_rng(2), 2000, sensor)
    t = make(sensor)
    out_sensor = getattr(t, "out_sensor_size", sensor)
    for seed in range(6):
        a = torch.from_numpy(events_to_frames(t(ev, generator=torch.Generator().manual_seed(seed)), out_sensor,
                                              n_time_bins=4, t_start=int(ev["t"][0])))
        # the frames path needs the same time bins: convert the whole recording first, then transform
        full = torch.from_numpy(events_to_frames(ev, sensor, n_time_bins=4))
        b = t(full, generator=torch.Generator().manual_seed(seed))
        if isinstance(t, RandomCrop):
            # cropping drops events, which can move t_last; compare per-pixel totals instead
            assert torch.equal(a.sum(0), b.sum(0))
        else:
            assert torch.equal(a, b)


def test_time_jitter_keeps_order_and_default_rng():
    ev = random_events(np.random.default_rng(3), 1000, (34, 34, 2))
    torch.manual_seed(0)
    a = TimeJitter(std=500)(ev)
    torch.manual_seed(0)
    b = TimeJitter(std=500)(ev)
    np.testing.assert_array_equal(a, b)
    assert np.all(np.diff(a["t"]) >= 0) and (a["t"] >= 0).all()
    np.testing.assert_array_equal(TimeJitter(std=0)(ev), ev)
    with pytest.raises(TypeError, match="before ToFrame"):
        TimeJitter()(torch.zeros(2, 2, 3, 3))


def test_compose_split_and_params():
    s = (34, 34, 2)
    c = Compose([Denoise(s), Downsample(s, 2), ToFrame((17, 17, 2), n_time_bins=3), RandomFlip((17, 17, 2))])
    head, tail = c.split_cacheable()
    assert [type(t).__name__ for t in head.transforms] == ["Denoise", "Downsample", "ToFrame"]
    assert [type(t).__name__ for t in tail.transforms] == ["RandomFlip"]
    assert head.params()["transforms"][2]["n_time_bins"] == 3
    out = c(random_events(np.random.default_rng(4), 500, s))
    assert out.shape == (3, 2, 17, 17)
