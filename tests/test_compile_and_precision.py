"""The compiled model under autocast, torch.compile and (when present) CUDA."""

import pytest
import torch

import composer

def small(name: str):
    """The shipped blueprint with every modality 6 steps long."""
    path = f"blueprints/{name}.yaml"
    short = [f"modalities.{m}.length=6" for m in composer.load_blueprint(path).modalities]
    return composer.compile_blueprint(composer.load_blueprint(path, short)).eval()


@pytest.mark.parametrize("name", ["late_fusion", "hct_mg"])
def test_bf16_autocast_on_cpu_stays_close_to_fp32(name):
    model = small(name)
    batch = model.example_inputs(2)
    reference = model(batch)["prediction"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(batch)["prediction"]
    assert torch.allclose(low.float(), reference, atol=0.05)


def test_torch_compile_gives_the_eager_output():
    model = small("late_fusion")
    batch = model.example_inputs(2)
    compiled = torch.compile(model, backend="aot_eager")
    assert torch.allclose(compiled(batch)["prediction"], model(batch)["prediction"])


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["late_fusion", "msaf", "hct_mg"])
def test_cuda_bf16_training_step(name):
    model = small(name).cuda().train()
    batch = model.example_inputs(4, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(batch)
        loss, _ = model.compute_loss({"main": out}, {"main": batch})
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
