import inspect
import itertools

import pytest
import torch

from seethrough.errors import InputError
from seethrough.featureviz.synthesis import nonparametric
from seethrough.featureviz.synthesis.nonparametric import synthesize_texture_nonparametric


def test_the_papers_constants():
    assert nonparametric.EPSILON == 0.1 and nonparametric.SIGMA_PER_WINDOW == 1 / 6.4
    assert nonparametric.MAX_ERROR == 0.3 and nonparametric.SEED_PATCH == 3
    defaults = inspect.signature(synthesize_texture_nonparametric).parameters
    assert defaults["epsilon"].default == 0.1 and defaults["max_error"].default == 0.3


def test_stripes_keep_their_period_and_colours():
    """A period-6 stripe sample, window 11 (always sees the previous stripe): every column of the
    output is a whole stripe or whole background, and stripes are exactly 6 apart."""
    sample = torch.zeros(3, 30, 30)
    sample[0, :, ::6] = 1.0  # red stripes
    sample[:, :, 1::6] = 1.0  # then a white one
    out = synthesize_texture_nonparametric(sample, size=(20, 40), window=11, seed=3)[0]
    colours = {tuple(c.tolist()) for c in out.flatten(1).T}
    assert colours <= {(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (1.0, 1.0, 1.0)}  # copied, not blended
    red_columns = [c for c in range(out.shape[-1]) if (out[:, :, c] == torch.tensor([1.0, 0, 0])[:, None]).all()]
    assert len(red_columns) >= 5
    assert all(b - a == 6 for a, b in itertools.pairwise(red_columns)), red_columns
    white_after = [(out[:, :, c + 1] == 1).all().item() for c in red_columns if c + 1 < out.shape[-1]]
    assert all(white_after)


def test_seeded_and_not_a_copy():
    generator = torch.Generator().manual_seed(0)
    sample = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=generator), size=24,
                                             mode="nearest")[0]
    first = synthesize_texture_nonparametric(sample, size=16, window=5, seed=1)
    again = synthesize_texture_nonparametric(sample, size=16, window=5, seed=1)
    other = synthesize_texture_nonparametric(sample, size=16, window=5, seed=2)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first[0], sample[:, :16, :16])


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(InputError, match="odd"):
        synthesize_texture_nonparametric(torch.rand(3, 20, 20), window=4)
    with pytest.raises(InputError, match="larger than the window"):
        synthesize_texture_nonparametric(torch.rand(3, 8, 8), window=11)
    with pytest.raises(InputError, match="3, H, W"):
        synthesize_texture_nonparametric(torch.rand(2, 3, 20, 20))
