#!/usr/bin/env python3
"""Writes the LPIPS (AlexNet) weights file infnerf reads (loss.lpips_weights).

The file is safetensors with float32 tensors conv1..5.weight ([out, in, k, k]), conv1..5.bias
([out]) -- torchvision's AlexNet `features` 0, 3, 6, 8, 10 -- and lin1..5.weight ([1, C, 1, 1]),
LPIPS's linear heads (lin0..4.model.1.weight in its checkpoint).

    python3 scripts/convert_lpips.py --lin alex.pth [--alexnet alexnet-owt-7be5be79.pth] OUT

  --lin      LPIPS v0.1 heads: lpips/weights/v0.1/alex.pth of
             https://github.com/richzhang/PerceptualSimilarity (or the `lpips` pip package).
  --alexnet  torchvision's ImageNet AlexNet weights; without it torchvision's
             AlexNet_Weights.IMAGENET1K_V1 is used (downloaded once into torch's cache).

Converting needs PyTorch (and torchvision without --alexnet). `--random OUT` writes random weights
of the same shapes with no dependency beyond Python: they exercise infnerf's LPIPS passes and
measure their cost, but do not measure perception.
"""

import argparse
import array
import json
import os
import random
import struct
import sys

# (in channels, out channels, kernel) of AlexNet's five convolutions
CONVS = [(3, 64, 11), (64, 192, 5), (192, 384, 3), (384, 256, 3), (256, 256, 3)]
TORCHVISION_LAYERS = [0, 3, 6, 8, 10]


def shapes():
    out = []
    for k, (cin, cout, ker) in enumerate(CONVS):
        out.append((f"conv{k + 1}.weight", [cout, cin, ker, ker]))
        out.append((f"conv{k + 1}.bias", [cout]))
    for k, (_, cout, _) in enumerate(CONVS):
        out.append((f"lin{k + 1}.weight", [1, cout, 1, 1]))
    return out


def write_safetensors(path, tensors):
    """tensors: list of (name, shape, flat list of floats); written as little-endian float32."""
    header, blobs, offset = {}, [], 0
    for name, shape, values in tensors:
        count = 1
        for d in shape:
            count *= d
        if len(values) != count:
            sys.exit(f"{name}: {len(values)} values for shape {shape}")
        data = array.array("f", values)
        if sys.byteorder != "little":
            data.byteswap()
        blob = data.tobytes()
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def random_tensors(seed):
    rng = random.Random(seed)
    tensors = []
    for name, shape in shapes():
        count = 1
        for d in shape:
            count *= d
        if name.endswith(".bias"):
            values = [rng.uniform(-0.1, 0.1) for _ in range(count)]
        elif name.startswith("lin"):
            values = [rng.uniform(0.0, 0.2) for _ in range(count)]
        else:
            bound = (6.0 / (shape[1] * shape[2] * shape[3])) ** 0.5
            values = [rng.uniform(-bound, bound) for _ in range(count)]
        tensors.append((name, shape, values))
    return tensors


def official_tensors(lin_path, alexnet_path):
    import torch

    if alexnet_path:
        features = torch.load(alexnet_path, map_location="cpu")
    else:
        import torchvision

        weights = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
        features = torchvision.models.alexnet(weights=weights).state_dict()
    heads = torch.load(lin_path, map_location="cpu")
    wanted = dict(shapes())
    tensors = []
    for k, layer in enumerate(TORCHVISION_LAYERS):
        for part in ("weight", "bias"):
            source = f"features.{layer}.{part}"
            if source not in features:
                sys.exit(f"{alexnet_path or 'torchvision AlexNet'}: no tensor {source}")
            t = features[source].float().contiguous()
            name = f"conv{k + 1}.{part}"
            if list(t.shape) != wanted[name]:
                sys.exit(f"{source}: shape {list(t.shape)}, expected {wanted[name]}")
            tensors.append((name, wanted[name], t.flatten().tolist()))
    for k in range(5):
        source = f"lin{k}.model.1.weight"
        if source not in heads:
            sys.exit(f"{lin_path}: no tensor {source} (is it LPIPS v0.1 alex.pth?)")
        t = heads[source].float().contiguous()
        name = f"lin{k + 1}.weight"
        if list(t.shape) != wanted[name]:
            sys.exit(f"{lin_path}: {source} has shape {list(t.shape)}, expected {wanted[name]}")
        tensors.append((name, wanted[name], t.flatten().tolist()))
    return tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the safetensors file to write")
    parser.add_argument("--lin", help="LPIPS v0.1 alex.pth (the linear heads)")
    parser.add_argument("--alexnet", help="torchvision's AlexNet weights (.pth)")
    parser.add_argument("--random", action="store_true", help="random weights of the right shapes (no PyTorch)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.random:
        tensors = random_tensors(args.seed)
    elif args.lin:
        tensors = official_tensors(args.lin, args.alexnet)
    else:
        parser.error("give --lin alex.pth (and optionally --alexnet), or --random")
    write_safetensors(args.out, tensors)
    print(f"wrote {args.out}: {sum(len(v) for _, _, v in tensors)} weights")


if __name__ == "__main__":
    main()
