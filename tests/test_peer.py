"""hybridlm vs transformers' OlmoHybridModel: same function with the same weights; the whole-model benchmark.

Parity tolerance: hidden states within 1e-4 absolute (magnitudes ~4; measured 1.3e-5 for L A and 3.6e-5 for the
default 8 layers: the GDN kernels and SDPA sum in different orders), losses within 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from hybridlm.bench.peer import TransformersPeer, copy_weights
from hybridlm.compiled import cpp_compiler
from hybridlm.bench.whole_model import flops_per_step, matched_transformer, random_rows, run_model_benchmark
from hybridlm.delay import DelayPattern
from hybridlm.model import HybridLM, ModelConfig
from hybridlm.ops.cross_entropy import heads_cross_entropy

SMALL = ModelConfig(schedule="LLAL", d_model=48, d_ff=64, n_heads=2, n_kv_heads=1, gdn_key_dim=16,
                    gdn_value_dim=24, context=40)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_same_weights_give_the_same_hidden_states_and_loss():
    torch.manual_seed(0)
    ours = HybridLM(SMALL)
    peer = TransformersPeer(SMALL)
    copy_weights(ours, peer)
    assert peer.heads.weight.shape == ours.heads.weight.shape
    assert sum(p.numel() for p in peer.parameters()) == ours.num_parameters()
    rows = random_rows(SMALL, batch=2, seed=3)
    with torch.no_grad():
        a, b = ours(rows[..., :-1], heads=False), peer(rows[..., :-1], heads=False)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
        valid = DelayPattern().target_mask(rows[..., 1:])
        loss_a, _ = heads_cross_entropy(a, ours.heads.weight, rows[..., 1:], valid)
        loss_b, _ = heads_cross_entropy(b, peer.heads.weight, rows[..., 1:], valid)
    assert loss_a.item() == pytest.approx(loss_b.item(), abs=1e-5)


def test_random_rows_are_reproducible_training_rows():
    rows = random_rows(SMALL, batch=3, seed=1)
    assert rows.shape == (3, 8, SMALL.context + 1)
    assert bool((rows[..., 0] == 1025).all()) and int(rows[..., 1:].max()) < 1024
    assert torch.equal(rows, random_rows(SMALL, batch=3, seed=1))
    assert not torch.equal(rows, random_rows(SMALL, batch=3, seed=2))


def test_matched_transformer_of_the_default_is_aaaaaaaa_1350():
    matched = matched_transformer(ModelConfig())
    assert (matched.schedule, matched.d_ff) == ("AAAAAAAA", 1350)
    with torch.device("meta"):
        assert HybridLM(matched).num_parameters() == 21_907_840


def test_flops_per_step_formula():
    config = ModelConfig()
    # all parameters minus the embedding tables and the 8,200 vector parameters (norm gains, A_log, dt_bias)
    matmul = 21_905_416 - 8 * 1027 * 384 - 8_200
    expected = 6 * matmul + 6 * 2 * 6 * 64 * 1024 + 18 * 6 * 6 * 48 * 96
    assert flops_per_step(config) == expected


def test_model_benchmark_prints_both_implementations_and_the_ratio(tmp_path, capsys):
    out = tmp_path / "bench.md"
    rows, table = run_model_benchmark(SMALL, batch=1, repeats=1, device="cpu", precisions=("fp32",), baseline=True)
    out.write_text(table)
    names = [row.name for row in rows]
    assert names[:2] == ["hybridlm", "transformers"] and "matched transformer" in names[2]
    assert all(row.seconds > 0 and row.steps_per_second > 0 for row in rows)
    table = out.read_text()
    assert "| hybridlm | fp32 |" in table and "| transformers | fp32 |" in table
    assert "x** transformers' speed" in table and "MFU peak" in table
    assert table.strip() in capsys.readouterr().out


def test_generation_benchmark_reports_real_time_factors_via_the_cli(tmp_path):
    from typer.testing import CliRunner

    from hybridlm.cli import app

    params = _tiny_bench_params(tmp_path)
    out = tmp_path / "gen.md"
    result = CliRunner().invoke(app, ["bench", "--generate", "--params", str(params), "--frames", "3", "--repeats",
                                      "1", "--generate-batch", "2", "--precision", "both", "--markdown", str(out)])
    assert result.exit_code == 0, result.output
    table = out.read_text()
    assert "| 1 | fp32 | eager |" in table and "| 2 | bf16 | eager |" in table and "x real time" in table
    assert "compiled" not in table  # only with --compile
    bad = CliRunner().invoke(app, ["bench", "--generate", "--params", str(params), "--precision", "fp16"])
    assert bad.exit_code == 2 and "--precision must be both, bf16 or fp32" in bad.output


def _tiny_bench_params(tmp_path):
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"model": dict(schedule="LLAL", d_model=48, d_ff=64, n_heads=2, n_kv_heads=1,
                                                    gdn_key_dim=16, gdn_value_dim=24, context=40)}))
    return params


@pytest.mark.skipif(cpp_compiler() is None, reason="torch.compile on a CPU needs a C++ compiler (g++ or $CXX)")
def test_generation_benchmark_times_the_compiled_decode_step(tmp_path):
    from typer.testing import CliRunner

    from hybridlm.cli import app

    argv = ["bench", "--generate", "--params", str(_tiny_bench_params(tmp_path)), "--frames", "3", "--repeats", "1",
            "--generate-batch", "1", "--precision", "bf16", "--compile"]  # one compile, in bf16 (oneDNN's packing)
    compiled = CliRunner().invoke(app, argv)
    assert compiled.exit_code == 0, compiled.output
    assert "| 1 | bf16 | eager |" in compiled.output and "| 1 | bf16 | compiled |" in compiled.output


def test_compile_errors_are_clear_before_any_work(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from hybridlm.cli import app

    params = str(_tiny_bench_params(tmp_path))
    alone = CliRunner().invoke(app, ["bench", "--model", "--params", params, "--compile"])
    assert alone.exit_code == 2 and "--compile times the compiled decode step; give it with --generate" in alone.output
    monkeypatch.setenv("CXX", "no-such-c++")  # a machine without a C++ compiler
    missing = CliRunner().invoke(app, ["bench", "--generate", "--params", params, "--frames", "3", "--repeats", "1",
                                       "--generate-batch", "1", "--precision", "fp32", "--compile"])
    assert missing.exit_code == 2, missing.output
    assert "needs a C++ compiler" in missing.output and "no-such-c++ is not on PATH" in missing.output
