"""Compare a compiled blueprint with the same model written by hand in PyTorch.

Run: python examples/handwritten_vs_compiled.py [--batch-size 32] [--device cpu]

The hand-written model copies the compiled model's weights, so both compute the same function
(checked), and the script times a forward pass and a training step of each.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import composer
from composer.bench import time_call


class HandWrittenLateFusion(nn.Module):
    """blueprints/late_fusion.yaml by hand: three packed LSTMs, concat, MLP."""

    def __init__(self):
        super().__init__()
        self.text = nn.LSTM(300, 64, batch_first=True)
        self.audio = nn.LSTM(5, 16, batch_first=True)
        self.vision = nn.LSTM(20, 32, batch_first=True)
        self.head = nn.Sequential(nn.Linear(112, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 1))

    @staticmethod
    def last_state(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = lstm(packed)
        return h[-1]

    def forward(self, batch):
        parts = [self.last_state(getattr(self, m), batch[m], batch[f"{m}_lengths"]) for m in ("text", "audio", "vision")]
        return self.head(torch.cat(parts, dim=-1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    compiled = composer.compile_blueprint(composer.load_blueprint("blueprints/late_fusion.yaml")).to(device)
    hand = HandWrittenLateFusion().to(device)
    hand.text.load_state_dict(compiled.text_enc.rnn.state_dict())
    hand.audio.load_state_dict(compiled.audio_enc.rnn.state_dict())
    hand.vision.load_state_dict(compiled.vision_enc.rnn.state_dict())
    hand.head.load_state_dict(compiled.head.net.state_dict())
    batch = compiled.example_inputs(args.batch_size, device=device)
    compiled.eval(), hand.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(batch)["prediction"], hand(batch), atol=1e-6), "models differ"
    compiled.train(), hand.train()
    label = batch["label"].view(-1, 1)

    def step(model, predict):
        loss = (predict(model) - label).abs().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    rows = []
    for name, model, predict in (
        ("compiled blueprint", compiled, lambda m: m(batch)["prediction"]),
        ("hand-written", hand, lambda m: m(batch)),
    ):
        with torch.no_grad():
            fwd = time_call(lambda: predict(model), device, warmup=3, repeats=args.repeats)
        train = time_call(lambda: step(model, predict), device, warmup=3, repeats=args.repeats)
        rows.append((name, fwd, train))
    print(f"late_fusion, batch {args.batch_size}, {device}, {torch.get_num_threads()} threads (median of {args.repeats})")
    for name, fwd, train in rows:
        print(f"  {name:<20} forward {fwd:8.3f} ms   train step {train:8.3f} ms")


if __name__ == "__main__":
    main()
