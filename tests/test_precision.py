"""--precision auto: bf16 where the trials' hardware computes it natively, decided from stand-in CPU flags and GPU
capabilities without TensorFlow; a line where bf16 would be emulated."""

import pytest

from beanlib import precision
from beanlib.precision import Device

AVX512_BF16 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni
"""
AVX2 = AVX512_BF16.replace(" avx512f avx512bw avx512_bf16 avx512_vnni", "")
AMX = AVX2.replace("avx2", "avx2 amx_bf16 amx_tile")
NVIDIA_SMI = "8.0\n8.0\n"


def test_cpu_flags_and_gpu_capabilities_are_read_from_the_tools_text():
    assert {"avx512_bf16", "avx2"} <= precision.cpu_flags(AVX512_BF16)
    assert "avx512_bf16" not in precision.cpu_flags(AVX2)
    assert precision.cpu_flags("processor : 0\n") == frozenset()
    assert precision.gpu_capabilities(NVIDIA_SMI) == (8.0, 8.0)
    assert precision.gpu_capabilities("No devices were found\n") == ()


@pytest.mark.parametrize("cpuinfo, gpus, on_gpu, expected", [
    (AVX512_BF16, (), False, "mixed_bfloat16"),
    (AMX, (), False, "mixed_bfloat16"),
    (AVX2, (), False, "float32"),
    (AVX2, (8.0,), True, "mixed_bfloat16"),      # an A100's trials: the GPU decides, not the host's CPU
    (AVX512_BF16, (7.5,), True, "float32"),      # a T4: no bf16 tensor cores
    (AVX2, (9.0, 7.0), True, "float32"),         # mixed GPUs: the slowest at bf16 decides
    (AVX512_BF16, (7.5,), False, "mixed_bfloat16"),  # --gpus-per-trial 0: the CPU decides
])
def test_auto_picks_bf16_only_where_the_trials_processor_computes_it_natively(cpuinfo, gpus, on_gpu, expected):
    chosen, why = precision.choose(Device(precision.cpu_flags(cpuinfo), gpus, "node-1"), on_gpu)
    assert chosen == expected and why.endswith("on node-1")


def test_bf16_asked_of_a_cpu_that_emulates_it_gets_one_warning_line_and_is_not_refused():
    avx2 = Device(precision.cpu_flags(AVX2), (), "node-1")
    line = precision.emulated("mixed_bfloat16", avx2, on_gpu=False)
    assert line.startswith("warning: --precision mixed_bfloat16 on node-1 is emulated") and "\n" not in line
    assert precision.emulated("mixed_bfloat16", Device(precision.cpu_flags(AVX512_BF16)), on_gpu=False) is None
    assert precision.emulated("float32", avx2, on_gpu=False) is None


@pytest.mark.slow
def test_the_sweep_resolves_auto_on_this_machine_and_plans_its_trials_with_it(tmp_path):
    """--precision auto says what it chose and why; the plan carries it (a bf16 trial's id differs from float32's)."""
    from beanlib.sweep import SweepOptions, run_sweep

    chosen, _ = precision.choose(precision.probe(), on_gpu=False)
    study = tmp_path / "two.yaml"
    study.write_text("name: two\ndescription: two LeNets\nbase: {model: lenet, image_size: 32}\nfactors:\n"
                     "  kernel_size: {settings: {k3: {kernel_size: 3}, k5: {kernel_size: 5}}}\n")
    plans = {}
    for asked in ("auto", None, "mixed_bfloat16"):
        plans[asked] = []
        run_sweep(SweepOptions(study=str(study), data="synthetic", results=str(tmp_path), dry_run=True, gpus_per_trial=0,
                               precision=asked), out=plans[asked].append)
    assert plans["auto"][0].startswith(f"precision auto: {chosen} (")
    # float32 is the studies' own precision: auto's float32 plans the very trials of a run without the flag
    assert (plans["auto"][1:] == plans[None]) == (chosen == "float32")
    assert plans["mixed_bfloat16"][-len(plans[None]):] != plans[None]
    emulated = precision.emulated("mixed_bfloat16", precision.probe(), on_gpu=False)
    assert (emulated is not None) == (plans["mixed_bfloat16"][0] == emulated)
