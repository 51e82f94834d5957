"""A tiny search blueprint shared by the search tests (not a test module)."""

from pathlib import Path

import yaml

TOY = {
    "blueprint": 1, "name": "stoy2",
    "modalities": {"text": {"features": 4, "length": 5}, "audio": {"features": 3, "length": 5}},
    "blocks": {
        "text_enc": {"type": "gru", "in": "text", "hidden": 4, "output": "last"},
        "audio_enc": {"type": "gru", "in": "audio", "hidden": 4, "output": "last"},
        "fusion": {"type": "concat", "in": ["text_enc", "audio_enc"]},
        "head": {"type": "mlp", "in": "fusion", "hidden": [4], "out": 1},
    },
    "losses": [{"type": "l1", "pred": "head"}],
    "training": {"epochs": 1, "batch_size": 8, "data": {"samples": {"train": 16, "valid": 8, "test": 8}}},
    "search": {"objective": {"metric": "mae"}, "sampler": "random", "heartbeat": 1,
               "space": {"blocks.text_enc.hidden": {"int": [2, 40]}, "blocks.head.hidden": {"choice": [[4], [6, 3], [5], [7]]}}},
}


def toy_file(tmp_path: Path, **search) -> Path:
    data = {**TOY, "search": {**TOY["search"], **search}}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
