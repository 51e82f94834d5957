"""LNLN in plain PyTorch (Zhang, Wang, Yu, "Towards Robust Multimodal Sentiment Analysis with
Incomplete Data", NeurIPS 2024), written from the paper (§3, eqs. 3-10) and the authors' public
code (Haoyu-ha/LNLN: ``models/lnln.py``, ``models/basic_layers.py``, ``core/losses.py``,
``core/dataset.py``, ``configs/train_{mosi,mosei,sims}.yaml``).

The layers are ALMT's (``tests/reference/almt.py``: LNLN's ``basic_layers.py`` holds the same
``Transformer``, ``CrossTransformer`` and ``HhyperLearningEncoder`` under the same parameter
names). Module and parameter names follow the authors' (``h_hyper``, ``h_p``, ``bertmodel``,
``proj_l/a/v``, ``proxy_dominate_modality_generator``, ``effective_discriminator``,
``completeness_check.0/1``, ``reconstructor.0/1/2`` (audio, vision, language), ``dmml.0-3``
(language encoder, hyper-modality learning, fusion, regression)), so the authors' checkpoints load.

:meth:`LNLN.forward` takes the complete and the incomplete inputs (``(vision, audio, text)``
each; ``None`` for the complete ones at evaluation) and returns the authors' dict;
:func:`multimodal_loss` is their ``MultimodalLoss``. Two generalisations, equal at the authors'
settings: the widths of ``h_hyper`` and ``h_p`` (hard-coded 128 there) are the hidden width, and
the kept tokens (``[:, :8]`` there) are ``token_length``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reference.almt import BertTextEncoder, CrossTransformer, HhyperLearningEncoder, Transformer

__all__ = ["LNLN", "GradientReversalLayer", "model_config", "multimodal_loss", "effectiveness_labels"]


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return -grad_output * ctx.alpha, None


class GradientReversalLayer(nn.Module):
    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return _Reverse.apply(x, self.alpha)


def model_config(**changes) -> dict:
    """The authors' ``configs/train_mosi.yaml`` (``base`` and ``model``), with nested ``changes``
    given as ``"model.dmml.fuison_transformer.depth": 4`` and so on."""
    config = {
        "base": {"alpha": 0.9, "beta": 0.8, "gamma": 0.1, "sigma": 1.0},
        "model": {
            "feature_extractor": {"input_length": [50, 500, 375], "token_length": [8, 8, 8], "heads": 8,
                                  "input_dims": [768, 20, 5], "hidden_dims": [128, 128, 128], "depth": 2},
            "dmc": {
                "proxy_dominant_feature_generator": {"input_length": 24, "token_length": 8, "depth": 2, "heads": 8, "input_dim": 128, "hidden_dim": 128},
                "effectiveness_discriminator": {"input_dim": 128, "hidden_dim": 64, "out_dim": 2},
                "completeness_check": {"input_length": 8, "token_length": 1, "depth": 2, "heads": 8, "input_dim": 128, "hidden_dim": 128},
            },
            "reconstructor": {"input_length": 8, "depth": 2, "heads": 8, "input_dim": 128, "hidden_dim": 128},
            "dmml": {
                "language_encoder": {"input_length": 8, "token_length": 8, "depth": 2, "heads": 8, "input_dim": 128, "hidden_dim": 128},
                "hyper_modality_learning": {"depth": 3, "heads": 8, "input_dim": 128, "hidden_dim": 128},
                "fuison_transformer": {"source_length": 8, "tgt_length": 8, "depth": 2, "heads": 8, "input_dim": 128, "hidden_dim": 128},
                "regression": {"input_dim": 128, "out_dim": 1},
            },
        },
        "dim_head": 64,  # the default of the authors' Transformer / CrossTransformer, which LNLN never sets
    }
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        assert leaf in node, f"no field {path}"
        node[leaf] = value
    return config


class LNLN(nn.Module):
    def __init__(self, args: dict, bert: nn.Module):
        super().__init__()
        fe, dmc, rec, dmml = (args["model"][k] for k in ("feature_extractor", "dmc", "reconstructor", "dmml"))
        e = args["dim_head"]
        n, d = fe["token_length"][0], fe["hidden_dims"][0]
        self.n = n
        self.h_hyper = nn.Parameter(torch.ones(1, n, d))
        self.h_p = nn.Parameter(torch.ones(1, n, d))
        self.bertmodel = BertTextEncoder(bert)

        def projection(i):  # feature_extractor index: 0 language, 1 video, 2 audio
            return nn.Sequential(
                nn.Linear(fe["input_dims"][i], fe["hidden_dims"][i]),
                Transformer(num_frames=fe["input_length"][i], save_hidden=False, token_len=fe["token_length"][i], dim=fe["hidden_dims"][i],
                            depth=fe["depth"], heads=fe["heads"], mlp_dim=fe["hidden_dims"][i], dim_head=e),
            )

        self.proj_l, self.proj_a, self.proj_v = projection(0), projection(2), projection(1)
        g = dmc["proxy_dominant_feature_generator"]
        self.proxy_dominate_modality_generator = Transformer(num_frames=g["input_length"], save_hidden=False, token_len=g["token_length"],
                                                             dim=g["input_dim"], depth=g["depth"], heads=g["heads"], mlp_dim=g["hidden_dim"], dim_head=e)
        self.GRL = GradientReversalLayer(alpha=1.0)
        ed = dmc["effectiveness_discriminator"]
        self.effective_discriminator = nn.Sequential(nn.Linear(ed["input_dim"], ed["hidden_dim"]), nn.LeakyReLU(0.1), nn.Linear(ed["hidden_dim"], ed["out_dim"]))
        cc = dmc["completeness_check"]
        self.completeness_check = nn.ModuleList([
            Transformer(num_frames=cc["input_length"], save_hidden=False, token_len=cc["token_length"], dim=cc["input_dim"], depth=cc["depth"],
                        heads=cc["heads"], mlp_dim=cc["hidden_dim"], dim_head=e),
            nn.Sequential(nn.Linear(cc["hidden_dim"], cc["hidden_dim"] // 2), nn.LeakyReLU(0.1), nn.Linear(cc["hidden_dim"] // 2, 1), nn.Sigmoid()),
        ])
        self.reconstructor = nn.ModuleList(
            Transformer(num_frames=rec["input_length"], save_hidden=False, token_len=None, dim=rec["input_dim"], depth=rec["depth"],
                        heads=rec["heads"], mlp_dim=rec["hidden_dim"], dim_head=e)
            for _ in range(3)
        )
        le, hm, ft = dmml["language_encoder"], dmml["hyper_modality_learning"], dmml["fuison_transformer"]
        self.dmml = nn.ModuleList([
            Transformer(num_frames=le["input_length"], save_hidden=True, token_len=None, dim=le["input_dim"], depth=le["depth"],
                        heads=le["heads"], mlp_dim=le["hidden_dim"], dim_head=e),
            HhyperLearningEncoder(dim=hm["input_dim"], dim_head=hm["input_dim"] // hm["heads"], depth=hm["depth"], heads=hm["heads"]),
            CrossTransformer(source_num_frames=ft["source_length"], tgt_num_frames=ft["tgt_length"], dim=ft["input_dim"], depth=ft["depth"],
                             heads=ft["heads"], mlp_dim=ft["hidden_dim"], dim_head=e),
            nn.Linear(dmml["regression"]["input_dim"], dmml["regression"]["out_dim"]),
        ])

    def features(self, vision, audio, language):
        n = self.n
        return self.proj_v(vision)[:, :n], self.proj_a(audio)[:, :n], self.proj_l(self.bertmodel(language))[:, :n]

    def forward(self, complete_input, incomplete_input):
        vision, audio, language = complete_input
        h_1_v, h_1_a, h_1_l = self.features(*incomplete_input)
        b, n = h_1_l.shape[0], self.n

        w = self.completeness_check[1](self.completeness_check[0](h_1_l)[:, 0])  # (B, 1) completeness scores
        h_0_p = self.h_p.expand(b, -1, -1)
        h_1_p = self.GRL(self.proxy_dominate_modality_generator(torch.cat([h_0_p, h_1_a, h_1_v], dim=1))[:, :n])
        h_1_d = h_1_p * (1 - w.unsqueeze(-1)) + h_1_l * w.unsqueeze(-1)

        h_d_list = self.dmml[0](h_1_d)
        h_hyper = self.dmml[1](h_d_list, h_1_a, h_1_v, self.h_hyper.expand(b, -1, -1))
        feat = self.dmml[2](h_hyper, h_d_list[-1])
        output = self.dmml[3](feat[:, 1:].mean(dim=1))

        rec_feats = complete_feats = discriminator_out = None
        if vision is not None and audio is not None and language is not None:
            rec_feats = torch.cat([self.reconstructor[0](h_1_a), self.reconstructor[1](h_1_v), self.reconstructor[2](h_1_l)], dim=1)
            complete_v, complete_a, complete_l = self.features(vision, audio, language)
            discriminator_out = self.effective_discriminator(torch.cat([h_1_d, complete_l]).flatten(0, 1))  # ((2B)·n, 2)
            complete_feats = torch.cat([complete_a, complete_v, complete_l], dim=1)
        return {"sentiment_preds": output, "w": w, "effectiveness_discriminator_out": discriminator_out,
                "rec_feats": rec_feats, "complete_feats": complete_feats}


def effectiveness_labels(batch_size: int, n: int) -> torch.Tensor:
    """The trainer's discriminator labels: ``B·n`` ones (the corrected features), then ``B·n`` zeros."""
    return torch.cat([torch.ones(batch_size * n), torch.zeros(batch_size * n)]).long()


def multimodal_loss(args: dict, out: dict, labels: dict) -> dict[str, torch.Tensor]:
    """``α l_cc + β l_adv + γ l_rec + σ l_sp`` (eq. 10, the authors' ``MultimodalLoss``) and its terms."""
    base = args["base"]
    l_cc = F.mse_loss(out["w"], labels["completeness_labels"])
    l_adv = F.cross_entropy(out["effectiveness_discriminator_out"], labels["effectiveness_labels"])
    l_rec = F.mse_loss(out["rec_feats"], out["complete_feats"])
    l_sp = F.mse_loss(out["sentiment_preds"], labels["sentiment_labels"])
    loss = base["alpha"] * l_cc + base["beta"] * l_adv + base["gamma"] * l_rec + base["sigma"] * l_sp
    return {"loss": loss, "l_sp": l_sp, "l_cc": l_cc, "l_adv": l_adv, "l_rec": l_rec}
