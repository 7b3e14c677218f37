from attention.cpu import cpu_description, onednn_isa_from_verbose, parse_cpuinfo

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 fma avx avx2 avx512f avx512bw avx512_bf16 sha_ni

processor\t: 1
model name\t: something else
"""


def test_cpuinfo_gives_the_first_cpus_model_and_vector_extensions_only():
    described = parse_cpuinfo(CPUINFO)
    assert described["model_name"] == "AMD EPYC" and (described["family"], described["model"]) == ("25", "17")
    assert described["vector_extensions"] == [
        "avx",
        "avx2",
        "avx512_bf16",
        "avx512bw",
        "avx512f",
        "fma",
        "sse4_2",
    ]


def test_onednn_isa_is_read_from_its_info_line_or_else_from_an_implementation_name():
    info = (
        "onednn_verbose,v1,info,oneDNN v3.12.0 (commit 80afa71)\n"
        "onednn_verbose,v1,info,cpu,isa:Intel AVX2 with Intel DL Boost\n"
    )
    assert onednn_isa_from_verbose(info) == "Intel AVX2 with Intel DL Boost"
    primitive = (
        "onednn_verbose,v1,primitive,exec,cpu,inner_product,brg_matmul:avx2,forward_inference,"
        "src:f32::blocked:ab::f0,,,mb2ic3oc4,0.008\n"
    )
    assert onednn_isa_from_verbose(primitive) == "avx2"
    assert onednn_isa_from_verbose("") is None


def test_cpu_description_has_every_field():
    described = cpu_description()
    assert {"model_name", "vector_extensions", "logical_cpus", "torch_cpu_capability", "onednn_isa"} <= set(
        described
    )
    assert described["model_name"]
