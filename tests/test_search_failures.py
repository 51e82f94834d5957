"""A search that cannot succeed says why and exits non-zero; bad storages and damaged search
folders are errors, never tracebacks (issue #28, point 4); one CSV writer for every table."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from composer.cli import main
from composer.errors import DiskFullError
from composer.search import search
from composer.search.outputs import write_csv


def _toy(tmp_path: Path) -> Path:
    from tests_search_toy import toy_file

    return toy_file(tmp_path)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_search_whose_every_trial_hits_a_full_disk_exits_non_zero_with_the_reason(tmp_path, monkeypatch, capsys):
    import composer.train.trainer as trainer

    monkeypatch.setattr(trainer, "publish", _disk_full)  # best.safetensors cannot be written
    code = main(["search", str(_toy(tmp_path)), "--trials", "2", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    assert err.startswith("error: no trial completed (2 trials)") and "no space left on device while writing" in err, err
    assert "trials.csv" in err and (tmp_path / "s" / "trials.csv").exists()


def test_a_search_with_a_completed_trial_exits_zero(tmp_path, capsys):
    code = main(["search", str(_toy(tmp_path)), "--trials", "1", "--out", str(tmp_path / "s")])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("storage, message", [
    ("nonsense", "--storage 'nonsense' is not a storage URL; expected postgresql://"),
    ("journal:", "journal: needs a file path"),
    ("foo://host/db", "cannot open the study storage foo://host/db (NoSuchModuleError"),
    ("sqlite:////no/such/folder/study.db", "cannot open the study storage sqlite:////no/such/folder/study.db (OperationalError"),
])
def test_a_bad_storage_url_is_an_error_naming_it(tmp_path, capsys, storage, message):
    code = main(["search", str(_toy(tmp_path)), "--trials", "1", "--out", str(tmp_path / "s"), "--storage", storage])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert message in err, err


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("searched")
    search(_toy(root), out=root / "s", trials=1)
    return root


def _break_info(folder: Path, edit) -> None:
    info = json.loads((folder / "search.json").read_text())
    (folder / "search.json").write_text(edit(info))


DAMAGE = {
    "search.json not JSON": (lambda f: (f / "search.json").write_text("{not json"), "search.json is damaged"),
    "search.json a list": (lambda f: (f / "search.json").write_text("[1, 2]"), "expected a JSON object with 'blueprint' and 'study', found list"),
    "no study name": (lambda f: _break_info(f, lambda i: json.dumps({k: v for k, v in i.items() if k != "study"})), "'study' is 'missing', expected the study's name"),
    "overrides not strings": (lambda f: _break_info(f, lambda i: json.dumps({**i, "overrides": [1]})), "'overrides' is [1], expected a list of --set strings"),
    "blueprint gone": (lambda f: _break_info(f, lambda i: json.dumps({**i, "blueprint": str(f / "gone.yaml")})), "gone.yaml is gone"),
    "no study.db": (lambda f: (f / "study.db").unlink(), "no study.db here"),
    "study.db not a database": (lambda f: (f / "study.db").write_bytes(b"garbage" * 100), "cannot open the study storage"),
    "another study name": (lambda f: _break_info(f, lambda i: json.dumps({**i, "study": "other"})), "no study named 'other' (it holds 'stoy2')"),
    "bad storage URL": (lambda f: _break_info(f, lambda i: json.dumps({**i, "storage": "nonsense"})), "--storage 'nonsense' is not a storage URL"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_search_report_on_a_damaged_folder_is_an_error(searched, tmp_path, capsys, case):
    damage, message = DAMAGE[case]
    folder = tmp_path / "s"
    shutil.copytree(searched / "s", folder)
    damage(folder)
    code = main(["search-report", str(folder)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert message in err, err


def test_one_csv_writer_orders_columns_and_keeps_the_previous_file_on_a_full_disk(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "t.csv", [{"b": 1, "a": 2}, {"c": 3, "b": 4}], first=["rank"])
    before = path.read_text()
    assert before.splitlines() == ["rank,b,a,c", ",1,2,", ",4,,3"]
    monkeypatch.setattr(Path, "write_text", _disk_full)
    with pytest.raises(DiskFullError, match=f"no space left on device while writing {path}; kept: the study's storage"):
        write_csv(path, [{"x": 1}])
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]
