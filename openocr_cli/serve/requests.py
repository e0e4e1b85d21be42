"""Reading `POST /v1/detect`: the image from a multipart `image` field or a JSON `image_base64`, and the
per-request settings (thresh, box_thresh, unclip_ratio, box_type, tile) from the query, form or JSON.

Only the body is read: a URL is never fetched for a client. Every problem is a RequestError naming the field.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Optional

from openocr_cli.errors import UserError
from openocr_cli.inference.tiling import TileSettings, parse_tile
from openocr_cli.postprocess import DBPostProcess
from openocr_cli.serve.problems import RequestError

FLOAT_PARAMS = ("thresh", "box_thresh", "unclip_ratio")
PARAMS = (*FLOAT_PARAMS, "box_type", "tile")
IMAGE_FIELD = "image"
BASE64_FIELD = "image_base64"
MIN_REQUEST_TILE = 128  # a request's own tile side: smaller tiles cost more per pixel than they can find
USAGE = ("send multipart/form-data with the image in a file field named `image` (curl -F image=@page.jpg URL) or "
         "application/json {\"image_base64\": \"...\"}")


@dataclass(frozen=True)
class DetectRequest:
    data: bytes
    params: dict[str, Any]  # the settings this request changes, already checked


async def read_detect_request(request) -> DetectRequest:
    """The image bytes and the checked settings of a detect request (a Starlette Request)."""
    params: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        _put(params, key, value, "query parameter")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        data = await _read_multipart(request, params)
    elif kind == "application/json":
        data = _read_json(await request.body(), params)
    else:
        got = f"Content-Type {kind}" if kind else "no Content-Type"
        raise RequestError(415, f"{got}: {USAGE}.")
    return DetectRequest(data, params)


async def _read_multipart(request, params: dict[str, Any]) -> bytes:
    from starlette.exceptions import HTTPException

    try:
        form = await request.form(max_files=1, max_fields=len(PARAMS) + 1)
    except HTTPException as exc:  # Starlette's word for a malformed body or too many parts
        raise RequestError(400, f"the multipart body cannot be read ({exc.detail}); {USAGE}.") from None
    try:
        upload = None
        for key, value in form.multi_items():
            if key == IMAGE_FIELD:
                upload = value
            elif not isinstance(value, str):  # a file under another name: `file` is the usual guess
                raise RequestError(422, f"form field {key!r} is a file; only `image` takes a file: send it as "
                                        "`image` (curl -F image=@page.jpg).")
            else:
                _put(params, key, value, "form field")
        if upload is None:
            raise RequestError(422, f"no `image` field in the form; {USAGE}.")
        if isinstance(upload, str):
            raise RequestError(422, "the `image` field is text, not a file; send the file (curl -F image=@page.jpg: "
                                    "mind the @).")
        return await upload.read()
    finally:
        await form.close()


def _read_json(body: bytes, params: dict[str, Any]) -> bytes:
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON ({exc}); {USAGE}.") from None
    except RecursionError:  # '[' * 100000: nested deeper than the parser goes
        raise RequestError(400, f"the JSON body is nested too deeply; {USAGE}.") from None
    if not isinstance(document, dict):
        raise RequestError(422, f"the JSON body must be an object; {USAGE}.")
    for key, value in document.items():
        if key == IMAGE_FIELD:
            raise RequestError(422, f"in a JSON body the image goes in `{BASE64_FIELD}`, base64-encoded.")
        if key != BASE64_FIELD:
            _put(params, key, value, "JSON key")
    text = document.get(BASE64_FIELD)
    if not isinstance(text, str):
        raise RequestError(422, f"the JSON body has no string `{BASE64_FIELD}`; {USAGE}.")
    if text.startswith("data:") and "," in text:  # a data: URL, as a browser's FileReader gives
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(422, f"`{BASE64_FIELD}` is not valid base64.") from None


def _put(params: dict[str, Any], key: str, value: Any, where: str) -> None:
    if key not in PARAMS:
        never = " The server never fetches a URL: send the image itself." if "url" in key.lower() else ""
        raise RequestError(422, f"unknown {where} {key!r}; the settings are {', '.join(PARAMS)}.{never}")
    if key in FLOAT_PARAMS:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise RequestError(422, f"{key}={value!r} is not a number.") from None
        params[key] = number
    elif key == "tile":
        params[key] = str(value)
    else:
        params[key] = value


def postprocess_for(base: DBPostProcess, params: dict[str, Any]) -> DBPostProcess:
    """The server's post-processing with this request's changes (checked by DBPostProcess itself)."""
    changes = {k: params[k] for k in (*FLOAT_PARAMS, "box_type") if k in params}
    if not changes:
        return base
    try:
        return dataclasses.replace(base, **changes)
    except (TypeError, ValueError) as exc:
        raise RequestError(422, f"{exc}.") from None


def tiling_for(base: TileSettings, server_overlap: Optional[int], params: dict[str, Any]) -> TileSettings:
    """The request's tiling (its `tile`, else the server's --tile), with the server's --tile-overlap when it
    fits the request's tile side, as `predict --tile N --tile-overlap M` would run."""
    if "tile" not in params:
        return base
    try:
        chosen = parse_tile(params["tile"])
    except UserError as exc:
        raise RequestError(422, str(exc).replace("--tile", "tile", 1)) from None
    if chosen.mode == "fixed" and chosen.side < MIN_REQUEST_TILE:
        raise RequestError(422, f"tile={chosen.side}: a request's tile side must be at least {MIN_REQUEST_TILE} "
                                "pixels (or auto / off).")
    if server_overlap is not None and server_overlap < chosen.side // 2:
        return TileSettings(chosen.mode, chosen.side, server_overlap)
    return chosen
