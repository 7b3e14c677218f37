"""What CPU this process runs on, as far as the kernel choice of :mod:`attention.linear` cares.

Recorded beside every measurement (``attention bench``) and every run's result, so that two numbers from
different machines can be told apart: the same cloud machine type is sometimes an AVX-512 host and sometimes
an AVX2-only one, and which matrix-product kernel is faster differs between them (docs/performance.md).
"""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import torch

# Flags of /proc/cpuinfo that say which vector instructions a matrix-product kernel can use.
VECTOR_FLAG = re.compile(r"^(sse4_2|avx|avx2|fma|f16c|avx_vnni|avx512\w*|amx\w*)$")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model name, family/model numbers and vector extensions from the text of ``/proc/cpuinfo`` (first CPU).

    A virtual machine may show only a short model name (``AMD EPYC``); the family and model numbers then
    still say the generation (family 25 model 17 is Zen 4)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block is enough: they are all alike here
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags", "").split()
    return {
        "model_name": fields.get("model name"),
        "vendor": fields.get("vendor_id"),
        "family": fields.get("cpu family"),
        "model": fields.get("model"),
        "vector_extensions": sorted(flag for flag in flags if VECTOR_FLAG.match(flag)),
    }


def onednn_isa_from_verbose(text: str) -> str | None:
    """The ISA in oneDNN's verbose output: its ``isa:`` info line (printed once per process), else the suffix
    of a primitive's implementation name (``brg_matmul:avx512_core`` gives ``avx512_core``)."""
    for line in text.splitlines():
        if ",info,cpu,isa:" in line:
            return line.split(",info,cpu,isa:", 1)[1].strip()
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 6 and fields[2] == "primitive" and fields[4] == "cpu" and ":" in fields[6]:
            return fields[6].split(":")[-1]
    return None


@cache
def onednn_isa() -> str | None:
    """oneDNN's instruction set on this CPU, read from its verbose output of one tiny product (oneDNN
    writes it to file descriptor 1, so that descriptor is pointed at a temporary file for the product);
    None where PyTorch has no oneDNN or it says nothing."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        operator = torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 1)
            try:
                with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                    operator(torch.ones(2, 3), torch.ones(4, 3), None, "none", [], "")
            finally:
                os.dup2(saved, 1)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
    except (RuntimeError, OSError):
        return None
    finally:
        os.close(saved)
    return onednn_isa_from_verbose(text)


@cache
def cpu_description() -> dict[str, Any]:
    """The CPU model, its vector extensions, PyTorch's dispatch level (``get_cpu_capability``: DEFAULT,
    AVX2, AVX512, ...) and oneDNN's ISA; fields that cannot be read on this system are None."""
    try:
        described = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux
        described = {
            "model_name": None,
            "vendor": None,
            "family": None,
            "model": None,
            "vector_extensions": None,
        }
    if not described["model_name"]:
        described["model_name"] = platform.processor() or platform.machine()
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return {
        **described,
        "logical_cpus": os.cpu_count(),
        "torch_cpu_capability": capability() if capability else None,
        "onednn_isa": onednn_isa(),
    }


def usable_cores() -> int:
    """The cores this process may run on (its affinity, as a batch system sets it), else all of them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
