from odconv_surgery.experiments.demo import main


def test_demo_core_runs_and_checks_outputs(capsys):
    assert main(["--no-onnx", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "converted 51/52 convs" in out and "function-preserving check" in out
