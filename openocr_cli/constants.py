"""Numbers several modules must agree on, kept in one place so they cannot drift apart."""

# ImageNet statistics in RGB order, applied positionally to OpenOCR's BGR images (openocr-compat: bgr-imagenet;
# the released weights were trained that way).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The ONNX opset exports pin (OpenOCR leaves it to the installed PyTorch; its released file uses 17).
DEFAULT_OPSET = 17
# int8 exports: from opset 20 GELU is one node, which stays float between int8 convolutions.
INT8_OPSET = 20

# DBPostProcess's settings, as the config's PostProcess section names them.
POSTPROCESS_KEYS = ("thresh", "box_thresh", "unclip_ratio", "max_candidates", "use_dilation", "score_mode", "box_type")

# Upper bounds of counts a user types: far above any real use, low enough that a typo (1e20) is refused with
# the flag's name instead of ending as a traceback in NumPy, the sampler or the thread pool, or as thousands of
# processes or threads on a small machine.
MAX_SEED = 2**32 - 1  # NumPy's seed range
MAX_BATCH = 4096
MAX_WORKERS = 256  # loader worker processes, decode threads
MAX_THREADS = 1024  # compute threads of a forward pass
MAX_EPOCHS = 1_000_000
