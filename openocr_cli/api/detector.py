"""`Detector`: the text detector as a Python object. predict, eval and benchmark are thin layers over it.

    from openocr_cli import Detector
    det = Detector("best.pth")                    # a checkpoint, a registry name, an .onnx or OpenVINO .xml file
    for r in det.predict("scans/"):               # a file, folder, glob, ndarray (BGR), PIL image or a list
        print(r.path, r.polygons, r.scores)

Nothing here prints or imports torch for an ONNX or OpenVINO model: notes and warnings go to the `openocr_cli`
logger, progress is shown only when asked for (`progress=True` or a callback).
"""

from __future__ import annotations

import glob
import inspect
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from openocr_cli.data.listing import check_sources, expand_pages, iter_files
from openocr_cli.data.pixels import is_pil_image
from openocr_cli.errors import ImageReadError, MissingFileError, UserError
from openocr_cli.evaluation.evaluator import EvalResult, evaluate_model
from openocr_cli.inference.options import InferenceOptions, option_names
from openocr_cli.inference.predictor import Predictor
from openocr_cli.inference.resolve import Resolved, Setting, describe_settings, resolve
from openocr_cli.inference.results import Result
from openocr_cli.option_table import check_keywords, flags_of

Source = Union[str, os.PathLike, Any]  # a path, folder or glob; a BGR ndarray; a PIL image
Progress = Union[bool, Callable[[int, Optional[int]], None], None]
ON_ERROR = ("raise", "skip")
API_OPTIONS = option_names()  # every keyword Detector takes besides the model: inference/options.py's table
MODEL_OPTIONS = {"torch": "weights", "onnx": "onnx_model", "openvino": "openvino_model"}  # the model's keyword


class Detector:
    """A loaded detector: one model, one set of resolved settings, reused for every call.

    `model` is a checkpoint (.pth, OpenOCR's or ours), a registry name ("repvit", "repvit-onnx";
    downloaded to the cache on first use), an ONNX file (run with onnxruntime, or with OpenVINO when
    `backend="openvino"`) or an OpenVINO IR .xml with its .bin beside it (run with OpenVINO); torch is
    never imported for a model file. The model may also be named as the command line does (`weights=`,
    `onnx_model=`, `openvino_model=`). The keywords are the inference options of inference/options.py, each the
    command line's flag in snake case with the same default (`box_thresh=` is --box-thresh); an unknown one
    raises TypeError naming the nearest, a value out of its range raises ValueError. They override the config,
    the model's own settings and a `postprocess=` file (a JSON path or a dict with thresh / box_thresh /
    unclip_ratio); `settings` records each value and where it came from. `config` is an OpenOCR-style YAML path and
    `overrides` a list of "Key.sub=value" strings (or a {"Key.sub": value} dict), as `-o` on the
    command line. `fuse=False` runs the backbone unfused, as `eval` does by default. A PDF source stands for
    its pages, rendered one at a time at `pdf_dpi` and named `doc.pdf#page=N` (needs the `pdf` extra).
    `tile="auto"` runs an image in tiles at its own resolution when the resize would shrink its text below
    what the model detects (`tile=1024`: every image, 1024-pixel tiles; `tile_overlap` in pixels); the tile
    maps are merged before post-processing, so a word across a seam is one box (inference/tiling.py).

    Raises UserError (the message the command line prints) for a bad setting or checkpoint, and
    MissingFileError (a FileNotFoundError) when the model file does not exist.
    """

    def __init__(self, model: Union[str, os.PathLike, None] = None, **options: Any):
        check_keywords(options, API_OPTIONS, "Detector()")
        if model is not None:
            named = [name for name in MODEL_OPTIONS.values() if options.get(name) is not None]
            if named:
                raise TypeError(f"Detector() got the model twice: as `model` and as {named[0]}=; pass it once.")
            name = os.fspath(model)
            kind = options.get("backend") or _backend_for(name)
            options[MODEL_OPTIONS.get(kind, "weights")] = name
        options = {key: value for key, value in options.items() if value is not None}  # None: "not given"
        self._setup(InferenceOptions(**options, origin="argument"))

    @classmethod
    def from_options(cls, options: InferenceOptions) -> Detector:
        """A detector from an InferenceOptions (how the commands build theirs)."""
        det = cls.__new__(cls)
        det._setup(options)
        return det

    def _setup(self, options: InferenceOptions) -> None:
        self.options = options
        self.resolved: Resolved = resolve(options)
        self.predictor: Predictor = self.resolved.predictor(options)

    # -- what it is -------------------------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Setting]:
        """Every resolved value and its source: {"thresh": Setting(0.3, "config"), ...}."""
        return dict(self.resolved.settings)

    def describe(self) -> dict[str, dict[str, Any]]:
        """`settings` as JSON-ready {key: {"value", "source"}}."""
        return describe_settings(self.resolved.settings)

    @property
    def backend(self) -> str:
        return self.predictor.backend.name

    def __reduce__(self):
        """Pickled as its options, loaded again on the other side (Spark / Ray / multiprocessing workers get a
        detector of their own; onnxruntime sessions and torch models are not sent)."""
        return (Detector.from_options, (self.options,))

    def __repr__(self) -> str:
        return f"Detector({self.resolved.model!r}, backend={self.backend!r})"

    # -- inference --------------------------------------------------------------------------------
    def predict(self, source: Union[Source, Iterable[Source]], *, batch_size: Optional[int] = None,
                return_maps: bool = False, keep_images: bool = False, on_error: str = "raise",
                recursive: bool = False, progress: Progress = None) -> list[Result]:
        """Detect text in every image of `source`; one Result per image, in input order.

        `source` is a file, a folder (its images and PDFs, sorted), a glob, a BGR uint8 ndarray, a PIL image
        (RGB), or a list of these; a PDF gives one Result per page, its path `doc.pdf#page=N`. Every named file
        and folder is checked before any work: a missing one raises MissingFileError (a FileNotFoundError). An
        image (or PDF: encrypted, damaged, empty) that cannot be read raises ImageReadError (a ValueError naming
        it), or with on_error="skip" gives a Result whose `error` says why.
        `return_maps` keeps each probability map (`Result.prob_map`); `keep_images` keeps decoded files
        (in-memory images are always kept), else `plot()` / `crops()` read the file again.
        """
        items = [item for one in _as_list(source) for item in _expand(one, recursive)]  # every file checked first
        return list(self._run(items, len(items), batch_size, return_maps, keep_images, on_error, progress))

    def stream(self, sources: Union[Source, Iterable[Source]], *, batch_size: Optional[int] = None,
               return_maps: bool = False, keep_images: bool = False, on_error: str = "raise",
               recursive: bool = False, progress: Progress = None) -> Iterator[Result]:
        """Like predict, as a generator: results in input order while later images are still read, with
        memory bounded by the batch, whatever the number of inputs (a generator of paths is read lazily;
        a missing file is raised when the stream reaches it, or with on_error="skip" becomes a Result whose
        `error` says so: a file deleted while a long stream runs does not end it)."""
        strict = on_error != "skip"
        items = (item for source in _as_list(sources) for item in _expand(source, recursive, strict))
        return self._run(items, None, batch_size, return_maps, keep_images, on_error, progress)

    def _run(self, items: Iterable, total: Optional[int], batch_size: Optional[int], return_maps: bool,
             keep_images: bool, on_error: str, progress: Progress) -> Iterator[Result]:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error={on_error!r}: use 'raise' or 'skip'")
        predictor = self.predictor
        if batch_size is not None and batch_size != predictor.batch_size:
            predictor = predictor.replace(batch_size=batch_size)
        report = _progress_reporter(progress, total)
        for done, result in enumerate(predictor.run(items, keep_images=keep_images, keep_maps=return_maps), 1):
            if result.error is not None and on_error == "raise":
                raise ImageReadError(result.error)
            report(done)
            yield result
        report(None)

    def evaluate(self, label_file: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
                 data_dir: Union[str, os.PathLike, None] = None, *, progress: Progress = None) -> EvalResult:
        """Precision / recall / hmean on a labelled set, exactly as `openocr-det eval` computes them.

        `label_file` is one or more OpenOCR label files (path<TAB>JSON); image paths are relative to
        `data_dir` (default: the config's Eval.dataset.data_dir, else the current folder). The result has
        .precision .recall .hmean .images .fps, .by_height (recall per text-height bucket), .failures
        (unreadable images) and .as_dict() (eval --json's numbers).
        """
        from openocr_cli.data.labels import labelled_data, load_labels
        from openocr_cli.evaluation.details import by_height

        files = [Path(label_file)] if isinstance(label_file, (str, os.PathLike)) else [Path(f) for f in label_file]
        folder, files = labelled_data(self.resolved.cfg, "Eval", Path(data_dir) if data_dir is not None else None,
                                      files)
        samples = load_labels(files, folder, check_images=True)
        report = _progress_reporter(progress, len(samples))
        count = iter(range(1, len(samples) + 1))
        result = evaluate_model(self.predictor, samples, lambda: report(next(count)))
        report(None)
        result.by_height = by_height(result.scored, self.predictor.resize)
        return result


def _signature() -> inspect.Signature:
    """Detector(model=None, *, <every option of the table with its default>), for help() and IDEs."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                annotation="Union[str, os.PathLike, None]")]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=field.type)
               for name, (field, _) in flags_of(InferenceOptions).items()]
    return inspect.Signature(params)


Detector.__init__.__signature__ = _signature()


def _backend_for(name: str) -> str:
    """The backend a model name implies when backend= is not given: openvino for an .xml, onnx for an .onnx
    (or an ONNX registry name), else torch."""
    if name.lower().endswith(".xml"):
        return "openvino"
    if name.lower().endswith(".onnx"):
        return "onnx"
    from openocr_cli.hub import get_entry

    entry = None if Path(name).expanduser().exists() else get_entry(name)
    return "onnx" if entry is not None and entry.format == "onnx" else "torch"


def _as_list(source: Any) -> list:
    """One source or a list of them (a str, Path, ndarray or PIL image is one source)."""
    if isinstance(source, (str, os.PathLike)) or is_pil_image(source) or hasattr(source, "__array_interface__"):
        return [source]
    try:
        return list(source) if not isinstance(source, Iterator) else source  # type: ignore[return-value]
    except TypeError:
        return [source]  # not iterable: as_bgr names the type it got


def _expand(source: Any, recursive: bool, strict: bool = True) -> Iterator[Any]:
    """A path, folder or glob -> its image files; pixels pass through. Not `strict`: a missing file is passed
    on, for the predictor to report as unreadable."""
    if not isinstance(source, (str, os.PathLike)):
        yield source
        return
    text = os.fspath(source)
    if not strict and not os.path.exists(text) and not glob.has_magic(text):
        yield text
        return
    try:  # the command line's own expansion: a file as is, a folder's images sorted, a glob's matches
        check_sources([text], recursive)
    except UserError as exc:  # missing, an empty folder, a glob matching nothing
        raise MissingFileError(str(exc)) from None
    yield from expand_pages(iter_files([text], recursive))  # listed lazily (data/listing.py)


def _progress_reporter(progress: Progress, total: Optional[int]) -> Callable[[Optional[int]], None]:
    """`progress(done, total)` per image (done None once at the end), or a plain stderr line for True."""
    if not progress:
        return lambda done: None
    if callable(progress):
        return lambda done: progress(done, total) if done is not None else None
    start, last = time.perf_counter(), [0.0]

    def line(done: Optional[int]) -> None:
        now = time.perf_counter()
        if done is not None and now - last[0] < 0.2:
            return
        if done is None:
            sys.stderr.write("\n")
            return
        last[0] = now
        rate = done / max(now - start, 1e-9)
        of = f"/{total}" if total is not None else ""
        sys.stderr.write(f"\r{done}{of} images, {rate:.1f} images/s")
        sys.stderr.flush()

    return line
