"""Python reference for rankd's vision encoder (embed/image.c, embed/vision_encoder.c).

preprocess(path) -> (crop uint8 [224, 224, 3], x float32 [3, 224, 224]):
  the DINOv2 evaluation transform as torchvision applies it to a PIL image
  (Resize(256, BICUBIC) on the shorter side, CenterCrop(224), ToTensor,
  Normalize(ImageNet mean/std)), written out with PIL + numpy so that
  torchvision is not needed: new long side int(256 * long / short), crop
  offsets int(round((size - 224) / 2.0)), x = (v / 255 - mean) / std in
  float32 — torchvision's formulas (transforms/functional.py).
OrtBackbone(model.onnx): the ONNX model run by onnxruntime (CPU), with the
  backbone's final LayerNorm output exposed as a graph output (the saliency
  head is left in the graph but its output is not requested); cls(x[n,3,224,224])
  -> [n, 384] is the parity reference (the position grid is resized inside
  the graph, as the model's authors exported it).
"""
import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def load_rgb(path):
    im = Image.open(path)
    im.load()
    return im.convert("RGB")


def preprocess_pil(im, resize=256, crop=224):
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(resize * long / short)
    nw, nh = (resize, new_long) if w <= h else (new_long, resize)
    im = im.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
    c = np.asarray(im.crop((left, top, left + crop, top + crop)), dtype=np.uint8)
    x = ((c.astype(np.float32) / np.float32(255.0) - MEAN) / STD).transpose(2, 0, 1)
    return c, np.ascontiguousarray(x, dtype=np.float32)


def preprocess(path, resize=256, crop=224):
    return preprocess_pil(load_rgb(path), resize, crop)


LN_OUT = "/backbone/layernorm/Add_1_output_0"


class OrtBackbone:
    def __init__(self, onnx_path, threads=1):
        import onnx
        import onnxruntime as ort
        m = onnx.load(onnx_path)
        vi = onnx.helper.make_tensor_value_info(LN_OUT, onnx.TensorProto.FLOAT, None)
        m.graph.output.append(vi)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def cls(self, x):
        return self.sess.run([LN_OUT], {"input_image": x})[0][:, 0, :]
