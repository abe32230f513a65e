"""Model FLOPs per token and the device's peak, for MFU measured from the step time."""

from __future__ import annotations

import torch

# Dense (no sparsity) peak TFLOP/s for 16-bit matrix math, from the vendors' data sheets.
PEAK_TFLOPS_16BIT = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0, "GH200": 989.0,
    "B200": 2250.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 125.0,
    "A10": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0,
}


def flops_per_token(config, seq_len: float) -> float:
    """Training FLOPs per token (forward + backward = 3x forward): 6 x matrix parameters, including
    the output layer, plus the attention scores and values (PaLM appendix B)."""
    d, layers, mlp = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    kv = d // config.num_attention_heads * getattr(config, "num_key_value_heads", config.num_attention_heads)
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * mlp  # q, o, k, v and a gated MLP
    matrices = layers * per_layer + d * config.vocab_size
    return 6 * matrices + 12 * layers * d * seq_len


def peak_flops(device: torch.device, override_tflops: float | None = None) -> float | None:
    """Peak 16-bit FLOP/s of `device`: the override if given, else looked up by the CUDA device
    name; None when unknown (MFU is then not reported)."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS_16BIT.items():  # more specific names come first
        if key in name:
            return tflops * 1e12
    return None
