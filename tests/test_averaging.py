"""Weight averaging (train.average): the EMA and LAWA arithmetic, what a run keeps, and an exact resume."""
from __future__ import annotations

import pytest
import torch

import train
from helpers import argv
from smallgpt.averaging import WeightAverage
from smallgpt.checkpoint import load_checkpoint, model_from_checkpoint
from smallgpt.config import DataConfig
from smallgpt.pipeline import prepare
from helpers import write_corpus


def stepped(model: torch.nn.Linear, step: int) -> list[torch.Tensor]:
    """Set the model's weights to those of a made-up optimizer step; return them."""
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.full_like(p, float(step * (i + 1))))
    return [p.detach().clone() for p in model.parameters()]


def test_ema_is_the_moving_average_of_the_weights_from_its_start():
    model = torch.nn.Linear(3, 2)
    avg = WeightAverage(model, "ema", start=0.5, beta=0.9)
    want = None
    for step in range(1, 11):
        weights = stepped(model, step)
        avg.update(step, step / 10)
        if step / 10 >= 0.5:
            want = weights if want is None else [0.9 * a + 0.1 * w for a, w in zip(want, weights)]
        assert avg.started == (want is not None)
    assert all(torch.allclose(a, w) for a, w in zip(avg.avg, want))
    with avg.applied() as m:  # the average inside, the trained weights again after
        assert torch.allclose(m.weight, want[0])
    assert torch.equal(model.weight, stepped(model, 10)[0])
    assert torch.allclose(avg.averaged_state()["weight"], want[0])


def test_lawa_is_the_mean_of_the_latest_snapshots():
    model = torch.nn.Linear(3, 2)
    avg = WeightAverage(model, "lawa", start=0.0, every=3, k=2)
    snaps = []
    for step in range(1, 13):
        weights = stepped(model, step)
        avg.update(step, step / 12)
        if step == 1 or step % 3 == 0:  # the first step it runs starts it
            snaps = [*snaps[-1:], weights]
    assert len(snaps) == 2 and all(torch.allclose(a, (s0 + s1) / 2) for a, s0, s1 in zip(avg.avg, *snaps))
    again = WeightAverage(model, "lawa", start=0.0, every=3, k=2)
    again.load_state_dict(avg.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.avg, avg.avg))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("corpus")
    d = {"data.source": str(write_corpus(tmp / "corpus.txt", 40_000, seed=0)), "data.tokenizer": "bytes",
         "data.dir": str(tmp / "bytes")}
    prepare(DataConfig(source=d["data.source"], tokenizer="bytes", dir=d["data.dir"]), progress=False)
    return d


@pytest.mark.parametrize("kind, extra", [("ema", {"train__average_beta": 0.9}),
                                         ("lawa", {"train__average_every": 3, "train__average_k": 4})])
def test_a_run_keeps_the_average_and_resumes_it_exactly(data, tmp_path, kind, extra):
    """The checkpoints' model is the average (what sample.py, eval.py and export.py read), the trained weights
    beside it; a run stopped at step 20 and resumed ends bitwise where an uninterrupted one does."""
    settings = {"train__average": kind, "train__average_start": 0.0, "train__checkpoint_interval": 20, **extra}
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert train.main(argv(data, ref, train__max_iters=40, **settings)) == 0
    assert train.main(argv(data, out, train__max_iters=20, **settings)) == 0
    assert train.main(argv(data, out, train__max_iters=40, train__resume="true", **settings)) == 0
    a, b = load_checkpoint(ref / "ckpt.pt"), load_checkpoint(out / "ckpt.pt")
    for key in ("model", "train_model"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert not torch.equal(a["model"]["transformer.wte.weight"], a["train_model"]["transformer.wte.weight"])
    assert torch.equal(model_from_checkpoint(a).transformer.wte.weight, a["model"]["transformer.wte.weight"])
    with pytest.raises(Exception, match="train.average"):  # resuming without it would drop the average
        train.main(argv(data, out, train__max_iters=50, train__resume="true"))
