"""Which video goes to which split: the CMU-MultimodalSDK's standard folds, or a split file.

``training.data.split`` is one of

* ``cmu_mosi`` — the SDK's standard CMU-MOSI folds (52 train, 10 valid, 31 test videos;
  ``cmu_mosi_std_folds.py``), built in;
* a JSON file ``{"train": [video ids], "valid": [...], "test": [...]}`` (``dev`` is read as ``valid``);
* the SDK's own fold module, e.g. ``cmu_mosei_std_folds.py``: its ``standard_train_fold``,
  ``standard_valid_fold`` and ``standard_test_fold`` lists are read as literals with
  :func:`ast.literal_eval`; the file is parsed, never run.

A sample whose video is in no fold is left out (and counted), as the SDK's ``get_tensors`` does.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from composer.data.base import SPLITS
from composer.errors import DataError

__all__ = ["read_split", "BUILTIN"]

MAX_SPLIT_BYTES = 16 * 2**20

_CMU_MOSI = {
    "train": (
        "2iD-tVS8NPw 8d-gEyoeBzc Qr1Ca94K55A Ci-AH39fi3Y 8qrpnFRGt2A Bfr499ggo-0 QN9ZIUWUXsY 9T9Hf74oK10 7JsX8y1ysxY "
        "1iG0909rllw Oz06ZWiO20M BioHAh1qJAQ 9c67fiY0wGQ Iu2PFX3z_1s Nzq88NnDkEk Clx4VXItLTE 9J25DZhivz8 Af8D0E4ZXaw "
        "TvyZBvOMOTc W8NXH0Djyww 8OtFthrtaJM 0h-zjBukYpk Vj1wYRQjB-o GWuJjcEuzt8 BI97DNYfe5I PZ-lDQFboO8 1DmNV9C1hbY "
        "OQvJTdtJ2H4 I5y0__X72p0 9qR7uwkblbs G6GlGvlkxAQ 6_0THN4chvY Njd1F0vZSm4 BvYR0L6f2Ig 03bSnISJMiM Dg_0XKD0Mf4 "
        "5W7Z1C_fDaE VbQk4H8hgr0 G-xst2euQUc MLal-t_vJPM BXuRRbG0Ugk LSi-o-IrDMs Jkswaaud0hk 2WGyTLYerpo 6Egk_28TtTM "
        "Sqr0AcuoNnk POKffnXeBds 73jzhE8R1TQ OtBXNcAL_lE HEsqda8_d0Q VCslbP0mgZI IumbAb8q2dM"
    ),
    "valid": "WKA5OygbEKI c5xsKMxpXnc atnd_PF-Lbs bvLlb-M3UXU bOL9jKpeJRs _dI--eQ6qVU ZAIRrfG22O0 X3j2zQgwYgE aiEXnCPZubE ZUXBRvtny7o",
    "test": (
        "tmZoasNr4rU zhpQhgha_KU lXPQBPVc5Cw iiK8YX8oH1E tStelxIAHjw nzpVDcQ0ywM etzxEpPuc6I cW1FSBF59ik d6hH302o4v8 "
        "k5Y_838nuGo pLTX3ipuDJI jUzDDGyPkXU f_pcplsH_V0 yvsjCA6Y5Fc nbWiPyCm4g0 rnaNMUZpvvg wMbj6ajWbic cM3Yna7AavY "
        "yDtzw_Y-7RU vyB00TXsimI dq3Nf_lMPnE phBUpBr1hSo d3_k5Xpfmik v0zCBqDeKcE tIrG4oNLFzE fvVhgmXxadc ob23OKe5a9Q "
        "cXypl4FnoZo vvZ4IcEtiZc f9O3YtZ2VfI c7UH_rxdZv4"
    ),
}
BUILTIN = {"cmu_mosi": {split: ids.split() for split, ids in _CMU_MOSI.items()}}
_SDK_NAMES = {"train": "standard_train_fold", "valid": "standard_valid_fold", "test": "standard_test_fold"}


def _from_json(path: Path, text: str) -> dict[str, list]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{\"train\": [...], \"valid\": [...], \"test\": [...]}}, got {type(data).__name__}")
    if "valid" not in data and "dev" in data:
        data["valid"] = data.pop("dev")
    return data


def _from_sdk_module(path: Path, text: str) -> dict[str, list]:
    try:
        tree = ast.parse(text, filename=str(path))
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise DataError(f"{path}: not a readable fold file ({type(exc).__name__}: {exc})") from None
    found: dict[str, list] = {}
    wanted = {v: k for k, v in _SDK_NAMES.items()}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) and node.targets[0].id in wanted:
            try:
                found[wanted[node.targets[0].id]] = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
                raise DataError(f"{path}: '{node.targets[0].id}' is not a literal list of video ids") from None
    if not found:
        raise DataError(f"{path}: no {', '.join(_SDK_NAMES.values())} lists found")
    return found


def read_split(spec: str | None) -> dict[str, str]:
    """``video id -> split`` for ``training.data.split`` (a built-in name or a file)."""
    if spec is None:
        raise DataError(f"training.data.split is not set: give {', '.join(BUILTIN)} (the SDK's standard folds), a JSON split file or the SDK's *_std_folds.py")
    if spec in BUILTIN:
        folds = BUILTIN[spec]
        where = spec
    else:
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"split '{spec}' is neither a built-in fold set ({', '.join(BUILTIN)}) nor a file")
        if path.stat().st_size > MAX_SPLIT_BYTES:
            raise DataError(f"{path}: {path.stat().st_size} bytes; a split file is at most {MAX_SPLIT_BYTES} bytes")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc})") from None
        folds = _from_sdk_module(path, text) if path.suffix == ".py" else _from_json(path, text)
        where = str(path)
    missing = [s for s in SPLITS if s not in folds]
    if missing:
        raise DataError(f"{where}: no {', '.join(missing)} fold (found: {', '.join(map(str, folds))})")
    out: dict[str, str] = {}
    for split in SPLITS:
        ids = folds[split]
        if not isinstance(ids, (list, tuple)) or not all(isinstance(v, str) for v in ids):
            raise DataError(f"{where}: the {split} fold must be a list of video ids (strings)")
        for vid in ids:
            if out.setdefault(vid, split) != split:
                raise DataError(f"{where}: video '{vid}' is in both the {out[vid]} and the {split} fold")
    return out
