from __future__ import annotations

from regionspot.cli.main import main
from regionspot.presets import MODELS


def test_info_prints_the_papers_head_sizes(capsys) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "24.23M" in lines["BB"] and "38.85M" in lines["BL"] and "38.85M" in lines["BL@336"]
    for model in MODELS:  # one row per named model, with its backbones and the paper's count
        assert lines[model.name].split()[1:3] == [model.sam, model.clip]
        assert lines[model.name].endswith(f" {model.paper_trainable_millions}M")


def test_info_on_a_checkpoint(mobile_sam_model, tmp_path, capsys) -> None:
    folder = mobile_sam_model.save_pretrained(tmp_path / "ckpt")
    assert main(["info", "--checkpoint", str(folder)]) == 0
    out = capsys.readouterr().out
    count = mobile_sam_model.trainable_parameter_count() / 1e6
    assert f"trainable parameters: {count:.2f}M" in out
    assert '"token_place": "transformer"' in out
