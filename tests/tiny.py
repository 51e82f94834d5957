"""The smallest two-modality blueprint the safety tests train in a second: GRU encoders, concat, MLP."""

MODS = {"text": {"features": 4, "length": 6}, "audio": {"features": 3, "length": 5}}
BLOCKS = {
    "text_enc": {"type": "gru", "in": "text", "hidden": 4, "output": "last"},
    "audio_enc": {"type": "gru", "in": "audio", "hidden": 4, "output": "last"},
    "fusion": {"type": "concat", "in": ["text_enc", "audio_enc"]},
    "head": {"type": "mlp", "in": "fusion", "hidden": [4], "out": 1},
}
