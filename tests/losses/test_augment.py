"""DiffAugment (``--diff_augment``): the transforms move or hide content, keep shapes and
gradients, and draw once per leading sample (a clip's frames move together)."""

import pytest
import torch

from rl_v2v_gan.losses.augment import cutout, diff_augment, parse_policy, translate


def test_parse_policy_accepts_the_known_names_and_names_an_unknown_one():
    assert parse_policy("") == ()
    assert parse_policy("translation, cutout") == ("translation", "cutout")
    with pytest.raises(ValueError, match="color"):
        parse_policy("translation,color")


def test_translation_shifts_each_sample_by_an_integer_offset_zero_filled():
    torch.manual_seed(0)
    x = torch.rand(64, 2, 3, 16, 16) + 1.0  # > 0 everywhere, so a fill is visible as 0
    y = translate(x)
    assert y.shape == x.shape
    seen_shift = False
    for n in range(64):
        # Find the shift that maps x[n] onto the inside of y[n]: it exists and is within 1/8 of the side.
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(y[n, ..., max(dy, 0):16 + min(dy, 0), max(dx, 0):16 + min(dx, 0)],
                                  x[n, ..., max(-dy, 0):16 + min(-dy, 0), max(-dx, 0):16 + min(-dx, 0)])]
        assert len(matches) == 1
        dy, dx = matches[0]
        filled = y[n].abs().sum(dim=(0, 1))  # [H,W]: 0 where filled
        assert int((filled == 0).sum()) == 16 * 16 - (16 - abs(dy)) * (16 - abs(dx))
        seen_shift |= (dy, dx) != (0, 0)
    assert seen_shift


def test_cutout_zeroes_one_square_of_half_the_side_clipped_at_the_border():
    torch.manual_seed(0)
    x = torch.rand(200, 3, 16, 16) + 1.0
    y = cutout(x)
    zero = (y == 0).all(dim=1)  # [N,H,W]: every channel zeroed together
    assert torch.equal((y == 0).any(dim=1), zero)
    sizes = zero.sum(dim=(1, 2))
    assert sizes.max() == 64 and sizes.min() > 0  # 8x8 when inside; less when clipped
    rows, cols = zero.any(dim=2), zero.any(dim=1)
    assert torch.equal(sizes, rows.sum(1) * cols.sum(1))  # a rectangle
    assert torch.equal(y[~zero.unsqueeze(1).expand_as(y)], x[~zero.unsqueeze(1).expand_as(x)])


@pytest.mark.parametrize("policy", [("translation",), ("cutout",), ("translation", "cutout")])
def test_a_clip_moves_as_one_and_gradients_flow(policy):
    torch.manual_seed(1)
    frame = torch.rand(8, 1, 3, 16, 16)
    clip = frame.expand(8, 5, 3, 16, 16).clone().requires_grad_(True)  # every frame alike
    out = diff_augment(clip, policy)
    assert torch.equal(out, out[:, :1].expand_as(out))  # one draw per clip, shared by its frames
    (out * torch.randn_like(out)).sum().backward()
    assert clip.grad is not None and clip.grad.abs().sum() > 0
    frames = diff_augment(clip.detach().flatten(0, 1), policy)  # frames: one draw each
    assert not torch.equal(frames.view(8, 5, 3, 16, 16), frames.view(8, 5, 3, 16, 16)[:, :1].expand(8, 5, 3, 16, 16))


def test_an_empty_policy_is_the_identity():
    x = torch.randn(2, 3, 3, 8, 8)
    assert diff_augment(x, ()) is x
