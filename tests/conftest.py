import pytest
import torch

# Test tensors are tiny: one intra-op thread is as fast, and it avoids OpenMP spin-wait collapse when the
# machine is shared (measured: one model test 123 s with 2 threads on a loaded 2-core box, 15 s with 1).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def randomise_attention(model: torch.nn.Module, scale: float = 0.5) -> None:
    """Give every ODConv attention head non-trivial logits so tests see input-dependent attentions."""
    from odconv_surgery import ODConv2d

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ODConv2d):
                for head in m.attention.heads().values():
                    head.weight.add_(torch.randn(head.weight.shape, generator=g) * scale)
                    head.bias.add_(torch.randn(head.bias.shape, generator=g) * scale)
