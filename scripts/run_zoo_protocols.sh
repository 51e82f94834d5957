#!/usr/bin/env bash
# The papers' protocols for every zoo model of issue #25, on synthetic data at test size
# (docs/zoo.md, "Protocols for every model"). Synthetic data: the numbers only prove that each
# protocol runs end to end for the model (training per seed, testing, mean ± std over seeds, the
# paper's column beside it), not how good the model is.
#
# For each model:
#   composer reproduce  X.yaml --dataset D --data synthetic --epochs 1 --protocol standard [--seeds ...]
#   composer robustness X.yaml --dataset D --data synthetic --epochs 1 --protocol lnln --rates 0,0.5
#   (TFR-Net, whose first entry is per_rate, also: --protocol per_rate --rates 0,0.5 --seeds 1111,1112,1113)
# with the `--set` sizes the model's own tests train at (hidden sizes 3-32, tiny BERT, lengths 4-9,
# 8 / 4 / 4 synthetic clips; listed below, one array per model). `reproduce` takes the seeds of the
# entry the table prints: MMSA's five (1111-1115) for every model with an MMSA results-table row;
# a model whose entry names no seeds (MMIM, TFR-Net, ALMT, MAG-BERT, MFM, MCTN: quoted papers'
# numbers, which do not say their seeds) is given MMSA's five explicitly, LNLN its authors' three
# (robust_evaluation.py). `robustness --protocol lnln` defaults to LNLN's seeds 1111, 1112, 1113.
#
# Usage: scripts/run_zoo_protocols.sh [MODEL ... | classic | all]   (default: the nine models of issue #25;
#        classic: the ten others; OUT=runs/zoo_protocols)
# Prints one line per protocol run: model, protocol, dataset, seeds x rates, models trained, seconds,
# MAE mean ± std; each run folder under $OUT keeps command.txt, log.txt (the printed table) and the
# result files (never committed: runs/ is ignored).
#
# Measured on the 2-core development machine (torch CPU, one thread per process), every run finished:
#   scripts/run_zoo_protocols.sh        (7 min 55 s; a first run while other jobs loaded both cores: 9 min 14 s)
#     misa     standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 20 s; MAE 1.108 ± 0.152
#     misa     lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 12 s; MAE 1.182 ± 0.178 (mean over rates)
#     mmim     standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 9 s; MAE 1.061 ± 0.156
#     mmim     lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 13 s; MAE 0.986 ± 0.157 (mean over rates)
#     self_mm  standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 24 s; MAE 1.270 ± 0.026
#     self_mm  lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 16 s; MAE 1.278 ± 0.033 (mean over rates)
#     mlf_dnn  standard sims  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 11 s; MAE 0.349 ± 0.077
#     mlf_dnn  lnln     sims  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 9 s; MAE 0.327 ± 0.097 (mean over rates)
#     mtfn     standard sims  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 11 s; MAE 0.583 ± 0.131
#     mtfn     lnln     sims  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 7 s; MAE 0.559 ± 0.173 (mean over rates)
#     mlmf     standard sims  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 15 s; MAE 0.388 ± 0.004
#     mlmf     lnln     sims  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 10 s; MAE 0.386 ± 0.001 (mean over rates)
#     tfr_net  standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 56 s; MAE 1.084 ± 0.208
#     tfr_net  lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 59 s; MAE 1.121 ± 0.170 (mean over rates)
#     tfr_net  per_rate mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 6 models, 6 tests, 65 s; MAE 1.130 ± 0.176 (mean over rates)
#     almt     standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 12 s; MAE 1.154 ± 0.509
#     almt     lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 15 s; MAE 1.247 ± 0.682 (mean over rates)
#     lnln     standard mosi  seeds 1111,1112,1113 x rates [0.0]: 3 models, 3 tests, 38 s; MAE 0.991 ± 0.480
#     lnln     lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 72 s; MAE 0.992 ± 0.482 (mean over rates)
#   scripts/run_zoo_protocols.sh classic (6 min 49 s; mag_bert, mfm, mctn from a rerun with five seeds, 28 s)
#     tfn      standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 25 s; MAE 1.250 ± 0.131
#     tfn      lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 19 s; MAE 1.260 ± 0.125 (mean over rates)
#     lmf      standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 18 s; MAE 1.151 ± 0.005
#     lmf      lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 14 s; MAE 1.148 ± 0.006 (mean over rates)
#     lf_dnn   standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 12 s; MAE 1.211 ± 0.034
#     lf_dnn   lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 9 s; MAE 1.225 ± 0.022 (mean over rates)
#     ef_lstm  standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 17 s; MAE 1.125 ± 0.049
#     ef_lstm  lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 9 s; MAE 1.145 ± 0.054 (mean over rates)
#     mfn      standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 21 s; MAE 1.473 ± 0.098
#     mfn      lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 8 s; MAE 1.468 ± 0.133 (mean over rates)
#     graph_mfn standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 5 s; MAE 1.658 ± 0.064
#     graph_mfn lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 38 s; MAE 1.683 ± 0.042 (mean over rates)
#     mult     standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 110 s; MAE 2.016 ± 0.301
#     mult     lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 44 s; MAE 2.203 ± 0.289 (mean over rates)
#     mag_bert standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 5 s; MAE 1.198 ± 0.106
#     mag_bert lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 6 s; MAE 1.208 ± 0.135 (mean over rates)
#     mfm      standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 4 s; MAE 1.181 ± 0.278
#     mfm      lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 4 s; MAE 1.345 ± 0.231 (mean over rates)
#     mctn     standard mosi  seeds 1111,1112,1113,1114,1115 x rates [0.0]: 5 models, 5 tests, 5 s; MAE 1.339 ± 0.255
#     mctn     lnln     mosi  seeds 1111,1112,1113 x rates [0.0, 0.5]: 3 models, 6 tests, 3 s; MAE 1.400 ± 0.291 (mean over rates)
# A rerun gives the same numbers (same seeds, same synthetic data). Seconds vary with the load of
# the shared machine (TFR-Net's models took 2-19 s each at test size).

set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/zoo_protocols}
COMPOSER=${COMPOSER:-composer}
ZOO=blueprints/zoo
MMSA_SEEDS=1111,1112,1113,1114,1115

# The `--set` sizes each model's own tests train at, built from a few shared pieces.
set_each() {  # PREFIX KEY=VALUE...: one `--set PREFIX.KEY=VALUE` for each (values without spaces)
  local prefix=$1 kv; shift
  for kv in "$@"; do printf -- '--set\n%s\n' "$prefix$kv"; done
}
tiny_bert() { set_each "blocks.$1." hidden_size=32 num_layers=2 num_heads=2 intermediate_size=37; }
vocab() {  # N BLOCK...: the token vocabulary of the text modality and of each BERT block
  local n=$1 block; shift
  set_each modalities.text. "vocab=$n"
  for block in "$@"; do set_each "blocks.$block." "vocab_size=$n"; done
}
two_heads() {  # DIM_HEAD BLOCK...: two attention heads of DIM_HEAD each
  local dim_head=$1 block; shift
  for block in "$@"; do set_each "blocks.$block." heads=2 "dim_head=$dim_head"; done
}
av_widths() { set_each modalities. "audio.features=$1" "vision.features=$2"; }
widths() { set_each modalities. "text.features=$1"; av_widths "$2" "$3"; }
lengths() { set_each modalities. "text.length=$1" "audio.length=$2" "vision.length=$3"; }
RUN_8_4_4=(--set 'training.batch_size=4' --set 'training.data.samples={train: 8, valid: 4, test: 4}')
SMALL=($(widths 6 3 4) $(lengths 7 9 8) "${RUN_8_4_4[@]}")  # tests/test_mmsa_zoo.py, test_mmsa_multitask.py (small)

# misa: tests/test_mmsa_misa.py (TINY, small)
SETS_misa=($(set_each blocks.text_bert. hidden_size=768 num_layers=1 num_heads=2 intermediate_size=37)
  $(vocab 200 text_bert) $(av_widths 3 4) $(lengths 6 8 7)
  $(set_each blocks. audio_rnn.hidden=3 vision_rnn.hidden=4 transformer.ff_dim=16) --set 'vars.d=8' "${RUN_8_4_4[@]}")
# mmim, self_mm: tests/test_mmsa_mmim.py, test_mmsa_self_mm.py (RUN)
BERT_RUN=($(tiny_bert text_bert) $(vocab 120 text_bert) $(av_widths 3 4) $(lengths 7 9 8))
SETS_mmim=("${BERT_RUN[@]}" --set 'training.data.samples={train: 16, valid: 8, test: 8}' --set 'training.batch_size=8')
SETS_self_mm=("${BERT_RUN[@]}" --set 'training.data.samples={train: 12, valid: 4, test: 4}' --set 'training.batch_size=4'
  --set 'blocks.ulgm.samples=12')
# mlf_dnn, mtfn, mlmf: tests/test_mmsa_multitask.py (small; mtfn also SMALLER)
SETS_mlf_dnn=("${SMALL[@]}")
SETS_mtfn=("${SMALL[@]}" $(set_each blocks. text_net.hidden=16 text_net.out=12 audio_net.hidden=4 vision_net.hidden=8))
SETS_mlmf=("${SMALL[@]}")
# tfr_net: tests/test_mmsa_tfr_net.py (sizes, small)
SETS_tfr_net=($(tiny_bert text_enc) $(vocab 128 text_enc) $(av_widths 3 5)
  $(lengths 6 8 4) $(set_each blocks. align.dim=4 align.heads=2 'head.hidden=[6]')
  $(set_each blocks.recon_t. length=6 heads=2) $(set_each blocks.recon_a. length=8 heads=2)
  $(set_each blocks.recon_v. length=4 heads=2) $(set_each blocks. fuse_t.hidden=5 fuse_a.hidden=3 fuse_v.hidden=4)
  --set 'training.batch_size=3' --set 'training.data.samples={train: 8, valid: 4, test: 4}')
# almt: tests/test_almt.py (SMALL, small_blueprint)
SETS_almt=($(tiny_bert text_enc) $(vocab 120 text_enc) $(set_each vars. d=16 n=3)
  $(av_widths 5 7) $(lengths 6 5 4) $(set_each blocks. proj_l.frames=6 proj_a.frames=5 proj_v.frames=4)
  $(two_heads 4 proj_l proj_a proj_v fusion ahl) $(set_each blocks. proj_l.mlp=12 proj_a.mlp=12 proj_v.mlp=12 fusion.mlp=12)
  $(set_each blocks.ahl. language_heads=2 language_dim_head=4 language_mlp=12)
  --set 'training.scheduler.warmup_steps=1' "${RUN_8_4_4[@]}")
# lnln: tests/test_lnln.py (SMALL, small_blueprint)
SETS_lnln=($(tiny_bert text_enc) $(tiny_bert text_enc_c) $(vocab 120 text_enc text_enc_c) $(set_each vars. d=16 n=3)
  $(av_widths 5 7) $(lengths 6 5 4)
  $(set_each blocks. proj_l.frames=6 proj_l_c.frames=6 proj_a.frames=5 proj_a_c.frames=5 proj_v.frames=4 proj_v_c.frames=4)
  $(two_heads 4 proj_l proj_a proj_v proj_l_c proj_a_c proj_v_c recon_a recon_v recon_l fusion dmc)
  $(two_heads 8 ahl) $(set_each blocks.ahl. language_heads=2 language_dim_head=4)
  --set 'blocks.disc.hidden=[6]' --set 'blocks.disc_c.hidden=[6]' --set 'blocks.drop_text.unk_token=4'
  --set 'blocks.drop_text.special_tokens=[1, 2, 0]' --set 'training.scheduler.warmup_steps=1' "${RUN_8_4_4[@]}")

# -- the classic models (scripts/run_zoo_protocols.sh classic): tests/test_mmsa_zoo.py (composer_model) --
SETS_tfn=("${SMALL[@]}")
SETS_lmf=("${SMALL[@]}")
SETS_lf_dnn=("${SMALL[@]}")
SETS_mfn=("${SMALL[@]}")
SETS_ef_lstm=($(widths 6 3 4) $(lengths 7 7 7) --set 'blocks.norm.steps=7' "${RUN_8_4_4[@]}")
SETS_graph_mfn=($(widths 6 3 4) $(lengths 7 7 7) "${RUN_8_4_4[@]}")
# mult: tests/test_mmsa_mult.py (composer_blueprint)
SETS_mult=("${SMALL[@]}" $(set_each vars. d=8 heads=2) --set 'training.grad_accum=1')
# mag_bert: tests/test_mmsa_mag_bert.py (overrides)
SETS_mag_bert=($(tiny_bert text_enc) $(vocab 128 text_enc) $(lengths 6 6 6) "${RUN_8_4_4[@]}")
# mfm: tests/test_mmsa_generative.py (small)
SETS_mfm=($(widths 6 3 4) $(lengths 5 5 5) --set 'blocks.memory.hidden=[8, 4, 8]'
  $(set_each blocks. memory.memory=8 memory.update_hidden=8 discriminative.code=8)
  $(set_each blocks. text_factor.code=8 audio_factor.code=8 vision_factor.code=8)
  $(set_each blocks. text_factor.width=8 audio_factor.width=8 vision_factor.width=8) --set 'vars.fy=8' "${RUN_8_4_4[@]}")
# mctn: tests/test_mmsa_generative.py (MCTN_SIZES, small)
SETS_mctn=($(widths 8 3 4) $(lengths 5 5 5)
  $(set_each blocks. vision_wide.width=8 audio_wide.width=8 cycle.hidden=4 second.hidden=4) "${RUN_8_4_4[@]}")

declare -A DATASET=([misa]=mosi [mmim]=mosi [self_mm]=mosi [mlf_dnn]=sims [mtfn]=sims [mlmf]=sims [tfr_net]=mosi [almt]=mosi [lnln]=mosi
                    [tfn]=mosi [lmf]=mosi [lf_dnn]=mosi [ef_lstm]=mosi [mfn]=mosi [graph_mfn]=mosi [mult]=mosi [mag_bert]=mosi [mfm]=mosi [mctn]=mosi)
# explicit seeds only where the standard entry names none (see above)
declare -A STANDARD_SEEDS=([mmim]=$MMSA_SEEDS [tfr_net]=$MMSA_SEEDS [almt]=$MMSA_SEEDS [lnln]=1111,1112,1113
                          [mag_bert]=$MMSA_SEEDS [mfm]=$MMSA_SEEDS [mctn]=$MMSA_SEEDS)

failed=0
summary() {  # model protocol dataset seconds out: one line from the newest result json in out
  python - "$@" <<'PY'
import json, sys
from pathlib import Path
model, protocol, dataset, seconds, out = sys.argv[1:]
saved = json.loads(max(Path(out).glob(f"{protocol}-*.json"), key=lambda p: p.stat().st_mtime).read_text())
row = saved["per_rate"][0] if protocol == "standard" else {"rate": "mean", **saved["mean_over_rates"]}
mae = row["mae"]
print(f"{model:8} {protocol:8} {dataset:5} seeds {','.join(map(str, saved['seeds']))} x rates {saved['rates']}: "
      f"{len({r['run_dir'] for r in saved['runs']})} models, {len(saved['runs'])} tests, {seconds} s; MAE {mae['mean']:.3f} ± {mae['std']:.3f}"
      f"{' (mean over rates)' if protocol != 'standard' else ''}")
PY
}

protocol() {  # model protocol command...
  local model=$1 protocol=$2; shift 2
  local out="$OUT/$model/$protocol" start=$SECONDS
  mkdir -p "$out"
  echo "+ $*" >"$out/command.txt"
  if "$@" --out "$out" >"$out/log.txt" 2>&1; then
    summary "$model" "$protocol" "${DATASET[$model]}" $((SECONDS - start)) "$out"
  else
    echo "$model $protocol FAILED ($((SECONDS - start)) s): see $out/log.txt"; tail -5 "$out/log.txt"; failed=1
  fi
}

ISSUE_25=(misa mmim self_mm mlf_dnn mtfn mlmf tfr_net almt lnln)
CLASSIC=(tfn lmf lf_dnn ef_lstm mfn graph_mfn mult mag_bert mfm mctn)
models=("$@")
[ ${#models[@]} -eq 0 ] && models=("${ISSUE_25[@]}")
[ "${models[*]}" = classic ] && models=("${CLASSIC[@]}")
[ "${models[*]}" = all ] && models=("${ISSUE_25[@]}" "${CLASSIC[@]}")
for model in "${models[@]}"; do
  declare -n sets="SETS_$model"
  common=("$COMPOSER" "$ZOO/$model.yaml" --dataset "${DATASET[$model]}" --data synthetic --epochs 1 "${sets[@]}")
  seeds=()
  [ -n "${STANDARD_SEEDS[$model]:-}" ] && seeds=(--seeds "${STANDARD_SEEDS[$model]}")
  protocol "$model" standard "${common[0]}" reproduce "${common[@]:1}" --protocol standard "${seeds[@]}"
  protocol "$model" lnln "${common[0]}" robustness "${common[@]:1}" --protocol lnln --rates 0,0.5
  if [ "$model" = tfr_net ]; then
    protocol "$model" per_rate "${common[0]}" robustness "${common[@]:1}" --protocol per_rate --rates 0,0.5 --seeds 1111,1112,1113
  fi
  unset -n sets
done
exit $failed
