import itertools

import pytest
import torch
import torch.nn.functional as F

from odconv_surgery.nn.geometry import conv_output_size, same_padding


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_conv_output_size_and_same_padding_match_torch():
    x = torch.zeros(1, 1, 11, 10)
    for k, s, d, p in itertools.product((1, 2, 3, 4), (1, 2, 3), (1, 2), (0, 1, 2)):
        w = torch.zeros(1, 1, k, k)
        h_out, w_out = F.conv2d(x, w, stride=s, dilation=d, padding=p).shape[-2:]
        assert (conv_output_size(11, k, s, d, p, p), conv_output_size(10, k, s, d, p, p)) == (h_out, w_out)
    x = torch.randn(1, 1, 11, 10)
    for kh, kw, d in itertools.product((1, 2, 3, 4), (1, 3, 4), (1, 2)):
        (top, bottom), (left, right) = same_padding((kh, kw), (d, d))
        w = torch.randn(1, 1, kh, kw)
        ref = F.conv2d(x, w, dilation=d, padding="same")
        ours = F.conv2d(F.pad(x, (left, right, top, bottom)), w, dilation=d)
        assert ours.shape == x.shape and torch.allclose(ours, ref, atol=1e-6)
