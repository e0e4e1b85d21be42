"""The forward pass on OpenVINO, behind the same Backend interface as the torch and onnxruntime ones.

OpenVINO reads its own IR (`export --format openvino` writes a .xml + .bin pair) and ONNX files
directly, so any model the onnx backend runs also runs here. On Intel and AMD CPUs its kernels
are faster than onnxruntime's, and its int8 models (quantized with NNCF) gain much more than
onnxruntime's do (docs/benchmarks.md).

The precision hint is always set: OpenVINO's CPU plugin otherwise picks bf16 by itself on CPUs
that have it, and the boxes would quietly differ from the float32 model's. torch is never imported.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from openocr_cli.errors import MissingFileError, UserError, first_line
from openocr_cli.inference import prestart
from openocr_cli.inference.backends.graph_checks import (
    ModelInfo,
    as_probability_map,
    check_graph,
    run_in_fixed_batches,
    unsupported,
)

# our section of an IR's rt_info; an ONNX file's metadata_props arrive in OpenVINO's "framework" section
RT_SECTION = "openocr_det"
FRAMEWORK_SECTION = "framework"
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
INSTALL_HINT = "pip install 'openocr-det[openvino]' (or: pip install openvino)"


def import_openvino():
    """The openvino package, or a UserError saying how to install it.

    Imported without its model converter (openvino.tools.ovc, with its telemetry): that is about half of
    `import openvino` (70 of 150 ms on the start-up path of every predict), and only `convert_model` uses it, so
    `convert_model` imports it when first called instead. An OpenVINO whose package needs it keeps it."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    sys.meta_path.insert(0, _NO_CONVERTER)
    try:
        import openvino
    except ImportError:
        openvino = None
    finally:
        sys.meta_path.remove(_NO_CONVERTER)
    if openvino is None or not hasattr(openvino, "Core"):  # an OpenVINO that cannot do without the converter
        for name in [n for n in sys.modules if n == "openvino" or n.startswith("openvino.")]:
            del sys.modules[name]
        try:
            import openvino
        except ImportError:
            raise UserError(f"the openvino backend needs the openvino package: {INSTALL_HINT}.") from None
    if not hasattr(openvino, "convert_model"):
        openvino.convert_model = _convert_model
    return openvino


class _NoConverter:
    """A meta-path finder that reports the model converter missing, which `openvino/__init__` tolerates."""

    def find_spec(self, name: str, path=None, target=None):
        if name == "openvino.tools.ovc":
            raise ModuleNotFoundError(f"{name} is imported when convert_model is first called", name=name)
        return None


_NO_CONVERTER = _NoConverter()


def _convert_model(*args, **kwargs):
    """openvino.convert_model, imported at its first use (see import_openvino)."""
    from openvino.tools.ovc import convert_model

    return convert_model(*args, **kwargs)


def openvino_device(spec: Optional[str], available: list[str]) -> str:
    """cpu -> CPU, gpu / gpu:N / gpu.N -> GPU[.N] (Intel GPUs), default CPU; refused when not present."""
    text = (spec or "cpu").strip().lower()
    match = re.fullmatch(r"(cpu|gpu)(?:[.:](\d+))?", text)
    if match is None:
        hint = " OpenVINO runs on Intel CPUs and GPUs, not CUDA." if text.startswith("cuda") else ""
        raise UserError(f"--device '{spec}' is not an OpenVINO device; use cpu, gpu or gpu:N.{hint}", exit_code=2)
    name = match.group(1).upper() + (f".{match.group(2)}" if match.group(2) else "")
    present = name in available or (name == "GPU" and any(d.startswith("GPU") for d in available))
    if not present:
        raise UserError(f"--device {spec}: OpenVINO sees no {name} here (available: {', '.join(available)}).")
    return name


def precision_problem(precision: str, core, device: str) -> Optional[str]:
    """Why the precision hint cannot run on `device` (None: it can)."""
    if precision not in HINTS:
        return f"OpenVINO runs fp32, bf16 and fp16 models (int8 comes from an int8 file), not {precision}"
    if precision == "fp32":
        return None
    capabilities = core.get_property(device, "OPTIMIZATION_CAPABILITIES")
    wanted = "BF16" if precision == "bf16" else "FP16"
    if wanted not in capabilities:
        return f"this {device} has no native {precision} ({', '.join(capabilities)})"
    return None


def has_fake_quantize(model) -> bool:
    """NNCF's int8 models hold FakeQuantize operations (so does a QDQ ONNX file once OpenVINO has read it)."""
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def kernel_cache() -> Optional[Path]:
    """Where OpenVINO keeps compiled models (<cache>/openvino, see hub.cache_dir), or None when it cannot write there.

    Compiling the RepViT-DB graph for the CPU takes about 0.35 s, a third of a short `predict` run; loading the
    compiled blob again takes about 0.05 s. OpenVINO keys each blob by the model and the compile settings, so a
    changed file or precision hint compiles afresh. OPENOCR_DET_OPENVINO_CACHE=0 turns it off.
    """
    if os.environ.get("OPENOCR_DET_OPENVINO_CACHE", "").strip().lower() in ("0", "false", "no", "off"):
        return None
    from openocr_cli.hub import cache_dir

    folder = cache_dir() / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


WARM_SHAPES = "first_shapes.json"  # in the kernel cache: {prestart key: the input shape its last run began with}
WARM_SHAPES_KEPT = 64


def prestart_key(path: Path, device: Optional[str], threads: Optional[int], precision: str) -> str:
    return prestart.load_key("openvino", path, device, threads, precision)


def remembered_shape(shapes_file: Path, key: str) -> Optional[tuple[int, ...]]:
    """The input shape the last run of this file and settings began with, if `shapes_file` remembers one."""
    try:
        shape = json.loads(shapes_file.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(shape, list) and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape):
        return tuple(shape)
    return None


def remember_shape(shapes_file: Path, key: str, shape: tuple[int, ...]) -> None:
    """Keep `shape` as this file's first shape for the next run's warm-up (the newest WARM_SHAPES_KEPT files).
    Written whole and renamed into place: runs in parallel cannot leave half a file; a failure only costs the
    next run its warm-up."""
    try:
        shapes = json.loads(shapes_file.read_text(encoding="utf-8")) if shapes_file.is_file() else {}
        shapes = shapes if isinstance(shapes, dict) else {}
    except (OSError, ValueError):
        shapes = {}
    if shapes.get(key) == list(shape):
        return
    shapes.pop(key, None)
    shapes[key] = list(shape)
    kept = dict(list(shapes.items())[-WARM_SHAPES_KEPT:])
    temporary = shapes_file.with_name(f".{WARM_SHAPES}.{os.getpid()}")
    try:
        temporary.write_text(json.dumps(kept), encoding="utf-8")
        os.replace(temporary, shapes_file)
    except OSError:
        temporary.unlink(missing_ok=True)


def begin_prestart(path: Path, device: Optional[str] = None, threads: Optional[int] = None,
                   precision: str = "fp32") -> None:
    """Read the file now and compile the shape its last run began with in a background thread, for a later
    `OpenVinoBackend.load` with the same arguments (cli/entry.py). The reading imports OpenVINO and holds the
    GIL, so it runs here; the compile and its warm-up run in C++ without the GIL, beside the CLI's imports."""
    key = prestart_key(path, device, threads, precision)
    try:
        backend = OpenVinoBackend._read(path, device, threads, precision)
    except UserError as exc:  # the command's load raises it when it gets there (after checking its flags)
        prestart.refuse(key, exc)
        return
    prestart.begin(key, backend.warmed)


def read_rt_metadata(model) -> dict[str, str]:
    """Our metadata from an IR (the openocr_det rt_info section), or an ONNX file's metadata_props."""
    metadata: dict[str, str] = {}
    for section in (FRAMEWORK_SECTION, RT_SECTION):  # ours wins over what an ONNX file carried
        if model.has_rt_info([section]):
            for key, value in model.get_rt_info([section]).astype(dict).items():
                metadata[str(key)] = value.astype(str) if hasattr(value, "astype") else str(value)
    return metadata


def _dims(partial_shape) -> list[object]:
    if partial_shape.rank.is_dynamic:
        return []
    return [d.get_length() if d.is_static else None for d in partial_shape]


def describe(model, path: Path) -> ModelInfo:
    """Check the model's inputs and outputs against what a DB detector looks like."""
    inputs, outputs = model.inputs, model.outputs
    if len(inputs) != 1:
        raise unsupported(path, f"it takes {len(inputs)} inputs")
    if not outputs:
        raise unsupported(path, "it has no output")
    inp, out = inputs[0], outputs[0]
    kind = inp.get_element_type().get_type_name()
    dtypes = {"f32": np.float32, "f16": np.float16}
    if kind not in dtypes:
        raise unsupported(path, f"its input is {kind}")
    name = next(iter(inp.get_names()), "input")
    out_name = next(iter(out.get_names()), "output")
    return check_graph(path, name, _dims(inp.get_partial_shape()), out_name, _dims(out.get_partial_shape()),
                       dtypes[kind], read_rt_metadata(model))


# A shape seen this often gets a static-shape compile of its own (at most MAX_STATIC of them); see OpenVinoBackend.
SPECIALIZE_AFTER = 32
MAX_STATIC = 4


class OpenVinoBackend:
    """An OpenVINO model compiled for the input shapes it meets, each compile reused for every batch.

    OpenVINO runs a graph compiled for one static input shape about 10% faster than its dynamic-shape
    compile (RepViT-DB int8, 480x640, 2 cores). Most runs feed one size (scans, frames, a benchmark
    set), so the first shape met is compiled static, and the dynamic compile is made only when a second
    shape comes; a shape that keeps coming (SPECIALIZE_AFTER batches) gets a static compile too, up to
    MAX_STATIC. Compiles go through OpenVINO's model cache (kernel_cache), so later processes load them.
    A model whose file fixes its input size is compiled once, as it is.
    """

    name = "openvino"

    def __init__(self, core, model, info: ModelInfo, device: str, precision: str, config: dict):
        self.core, self.model, self.info = core, model, info
        self.device, self.precision, self.config = device, precision, config
        self._compiled: dict[Optional[tuple[int, ...]], tuple[object, object]] = {}  # shape (None: as read)
        self._warmed: dict[tuple[int, ...], tuple[object, object]] = {}  # compiled ahead by `warmed`, not used yet
        # where this file's first shape is remembered, and under which key (None: no kernel cache)
        self.first_shape: Optional[tuple[Path, str]] = None
        self._seen: dict[tuple[int, ...], int] = {}
        self._fixed_shape = not model.inputs[0].get_partial_shape().is_dynamic  # a file that fixes its input
        if self._fixed_shape:
            self._compile(None)

    @classmethod
    def load(cls, path: Path, device: Optional[str] = None, threads: Optional[int] = None,
             precision: str = "fp32") -> OpenVinoBackend:
        """Read `path` (.xml beside its .bin, or .onnx) for `device` at the `precision` hint; it is compiled at the
        first batch (at once when its input size is fixed). What a prestart (cli/entry.py) began with the same
        arguments is taken instead, when it succeeded."""
        ready = prestart.take(prestart_key(path, device, threads, precision))
        if isinstance(ready, OpenVinoBackend):
            return ready
        return cls._read(path, device, threads, precision)

    @classmethod
    def _read(cls, path: Path, device: Optional[str], threads: Optional[int], precision: str) -> OpenVinoBackend:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"OpenVINO model {path} does not exist.")
        if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
            raise MissingFileError(f"{path} needs its weights file {path.with_suffix('.bin')} beside it.")
        if threads is not None and threads < 1:
            raise UserError("--threads must be at least 1.", exit_code=2)
        ov = import_openvino()
        core = ov.Core()
        kernels = kernel_cache()
        if kernels is not None:
            core.set_property({"CACHE_DIR": str(kernels)})
        target = openvino_device(device, core.available_devices)
        problem = precision_problem(precision, core, target)
        if problem is not None:
            raise UserError(f"cannot run {precision} on {target}: {problem}.", exit_code=2)
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line reports
            reason = first_line(exc)
            hint = " It looks like a weights file: run it with --weights and the torch backend." \
                if path.suffix.lower() in (".pth", ".pt", ".pdparams") else ""
            raise UserError(f"{path} is not a model OpenVINO {ov.__version__} can read ({reason}).{hint}") from exc
        info = describe(model, path)
        config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None and target == "CPU":
            config["INFERENCE_NUM_THREADS"] = threads
        backend = cls(core, model, info, target, precision, config)
        if kernels is not None:
            backend.first_shape = (kernels / WARM_SHAPES, prestart_key(path, device, threads, precision))
        return backend

    def warmed(self) -> OpenVinoBackend:
        """This backend with the shape this file's last run began with (remembered in the kernel cache) compiled
        and run once on zeros, so that a first batch of that size finds it ready."""
        shape = remembered_shape(*self.first_shape) if self.first_shape and not self._fixed_shape else None
        if shape is not None:
            compiled, request = self._compile_static(shape)
            request.infer({0: np.zeros(shape, dtype=self.info.input_dtype)})
            self._warmed[shape] = (compiled, request)
        return self

    def _compile_static(self, shape: tuple[int, ...]) -> tuple[object, object]:
        model = self.model.clone()
        model.reshape({model.inputs[0]: list(shape)})
        return self._compile_model(model)

    def _compile_model(self, model) -> tuple[object, object]:
        try:
            compiled = self.core.compile_model(model, self.device, self.config)
        except Exception as exc:
            raise UserError(f"OpenVINO could not compile {self.info.path} for {self.device}: "
                            f"{first_line(exc)}") from exc
        return compiled, compiled.create_infer_request()

    def _compile(self, shape: Optional[tuple[int, ...]]) -> tuple[object, object]:
        """The compiled model and infer request for `shape` (None: the graph as read), made on first use."""
        if shape not in self._compiled:
            first = not self._compiled
            if shape is None:
                self._compiled[shape] = self._compile_model(self.model)
            else:
                warmed = self._warmed.pop(shape, None)
                self._compiled[shape] = warmed or self._compile_static(shape)
                if first and self.first_shape is not None:
                    remember_shape(*self.first_shape, shape)
            self._warmed.clear()  # a warm-up for another size is not needed any more
        return self._compiled[shape]

    @property
    def variants(self) -> dict[Optional[tuple[int, ...]], object]:
        """The compiled models so far, by the input shape each was compiled for (None: the graph as read)."""
        return {shape: compiled for shape, (compiled, _) in self._compiled.items()}

    def _for_shape(self, shape: tuple[int, ...]) -> tuple[object, object]:
        if self._fixed_shape:
            return self._compiled[None]
        if shape in self._compiled:
            return self._compiled[shape]
        seen = self._seen[shape] = self._seen.get(shape, 0) + 1
        static = sum(key is not None for key in self._compiled)
        if not self._compiled or (seen >= SPECIALIZE_AFTER and static < MAX_STATIC):
            return self._compile(shape)
        return self._compile(None)

    def with_precision(self, precision: str) -> OpenVinoBackend:
        """The same file compiled again at another precision hint (benchmark rows)."""
        if precision == self.precision:
            return self
        return OpenVinoBackend.load(self.info.path, self.device.lower().replace(".", ":"), self._threads(), precision)

    def _threads(self) -> Optional[int]:
        return self.config.get("INFERENCE_NUM_THREADS")

    def cannot_run(self, precision: str) -> Optional[str]:
        """Why this device cannot take `precision` as a hint (None: it can); benchmark skips those rows."""
        return precision_problem(precision, import_openvino().Core(), self.device)

    def is_int8(self) -> bool:
        """Whether the file is quantised: its metadata `precision` says so, else its graph has FakeQuantize ops
        (read from the file again: the compiled model's graph is the plugin's own)."""
        stated = str(self.info.metadata.get("precision", "")).strip().lower()
        if stated:
            return stated.startswith("int8")
        return has_fake_quantize(import_openvino().Core().read_model(str(self.info.path)))

    @property
    def providers(self) -> list[str]:
        """The device it runs on, in the onnx backend's terms (first entry = where it runs)."""
        return [f"OpenVINO {self.device}"]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, 1, H, W) float32; split into the model's batch size if it is fixed."""
        return run_in_fixed_batches(self._run, batch, self.info.fixed_batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        tensor = np.ascontiguousarray(batch, dtype=self.info.input_dtype)
        compiled, request = self._for_shape(tensor.shape)
        try:
            # the tensor outlives this synchronous call, so OpenVINO may read it in place instead of copying it
            out = request.infer({0: tensor}, share_inputs=True)[compiled.output(0)]
        except Exception as exc:
            reason = first_line(exc)
            raise UserError(f"OpenVINO failed on {self.info.path} with an input of shape "
                            f"{list(batch.shape)}: {reason}") from exc
        return as_probability_map(out, len(batch), self.info, batch.shape)
