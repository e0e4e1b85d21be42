"""PDF input: a PDF is its pages (`doc.pdf#page=N`), rendered upright at --pdf-dpi; bad PDFs fail per file."""

from __future__ import annotations

import hashlib
import json
import struct

import cv2
import numpy as np
import pytest

from openocr_cli.data.images import collect_images, read_image
from openocr_cli.data.pdf import expand_pdf, page_size, read_pdf
from openocr_cli.errors import ImageReadError
from tests.conftest import label_line, write_image

pdfium = pytest.importorskip("pypdfium2")
raw = pdfium.raw


def make_pdf(path, sizes, rotate=None):
    """A PDF with one page per (width, height) in points, a black 50 x 50 pt square at each page's top-left
    (before /Rotate); `rotate` maps a page index to its /Rotate."""
    doc = pdfium.PdfDocument.new()
    for index, (width, height) in enumerate(sizes):
        page = doc.new_page(width, height)
        square = raw.FPDFPageObj_CreateNewRect(0, height - 50, 50, 50)
        raw.FPDFPageObj_SetFillColor(square, 0, 0, 0, 255)
        raw.FPDFPath_SetDrawMode(square, raw.FPDF_FILLMODE_ALTERNATE, False)
        raw.FPDFPage_InsertObject(page, square)
        raw.FPDFPage_GenerateContent(page)
        if rotate and index in rotate:
            page.set_rotation(rotate[index])
    doc.save(str(path))
    doc.close()
    return path


PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    s, j = list(range(256)), 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out, i, j = bytearray(), 0, 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def encrypted_pdf(path, user=b"secret", owner=b"owner"):
    """A one-page PDF under the standard security handler, revision 2 (40-bit RC4; the PDF spec's algorithms 3
    and 4 for /O and /U): PDFium cannot write one, and it opens with the password (checked below)."""
    padded = (user + PAD)[:32]
    o_value = _rc4(hashlib.md5((owner + PAD)[:32]).digest()[:5], padded)
    perms, file_id = -4, b"0123456789abcdef"
    u_value = _rc4(hashlib.md5(padded + o_value + struct.pack("<i", perms) + file_id).digest()[:5], PAD)
    bodies = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
              b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 50] >>",
              b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (o_value.hex().encode(),
                                                                           u_value.hex().encode(), perms)]
    _write_pdf(path, bodies, b"/Encrypt 4 0 R /ID [<%s> <%s>]" % (file_id.hex().encode(), file_id.hex().encode()))
    return path


def _write_pdf(path, bodies, trailer=b""):
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(bodies, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s >>\nstartxref\n%d\n%%%%EOF\n" % (len(bodies) + 1, trailer, xref)
    path.write_bytes(bytes(out))


def test_pages_are_named_in_order_and_rendered_upright(tmp_path):
    doc = make_pdf(tmp_path / "doc.pdf", [(200, 100), (200, 100), (120, 80)], rotate={1: 90})
    pages = collect_images([str(doc)])
    assert pages == [f"{doc}#page={n}" for n in (1, 2, 3)]
    first, turned = read_image(pages[0], pdf_dpi=72), read_image(pages[1], pdf_dpi=72)
    assert first.shape == (100, 200, 3) and first.dtype == np.uint8
    assert first[5, 5].tolist() == [0, 0, 0] and first[5, -5].tolist() == [255, 255, 255]
    # /Rotate 90 turns the page clockwise for display: 100 wide, 200 tall, the square now top-right
    assert turned.shape == (200, 100, 3)
    assert turned[5, -5].tolist() == [0, 0, 0] and turned[5, 5].tolist() == [255, 255, 255]
    assert read_image(pages[2], pdf_dpi=144).shape == (160, 240, 3)  # dpi scales the pixels


def test_page_size_is_the_rendered_size_without_rendering_and_refuses_what_read_pdf_refuses(tmp_path):
    # odd point sizes and dpis whose products are not whole pixels; page 2 turned by /Rotate 90
    doc = str(make_pdf(tmp_path / "doc.pdf", [(200.3, 100.7), (123.4, 321.9)], rotate={1: 90}))
    for page in (1, 2):
        for dpi in (72, 100, 150.5, 200, 333):
            assert page_size(doc, page, dpi) == read_pdf(doc, page, dpi=dpi).shape[:2], (page, dpi)
    assert page_size(doc, 2, 72) == (124, 322)  # /Rotate 90: 322 wide, 124 tall
    with pytest.raises(ImageReadError, match="over the limit of 10,000"):
        page_size(doc, 1, 200, max_pixels=10_000)
    with pytest.raises(ImageReadError, match="exceeds 20000 px"):
        page_size(doc, 1, 10_000)
    with pytest.raises(ImageReadError, match="page=3: the PDF has 2 page"):
        page_size(doc, 3)


def test_folder_keeps_order_and_hash_names_stay_files(tmp_path):
    make_pdf(tmp_path / "b#2.pdf", [(100, 100), (100, 100)])
    write_image(tmp_path / "a.png", 20, 30)
    write_image(tmp_path / "c.pdf#page=9.png", 20, 30)  # a real file whose name looks like a page
    names = [p.rsplit("/", 1)[1] for p in collect_images([str(tmp_path)])]
    assert names == ["a.png", "b#2.pdf#page=1", "b#2.pdf#page=2", "c.pdf#page=9.png"]
    assert read_image(str(tmp_path / "c.pdf#page=9.png")).shape == (20, 30, 3)
    assert read_image(str(tmp_path / "b#2.pdf#page=2"), pdf_dpi=36).shape == (50, 50, 3)
    with pytest.raises(ImageReadError, match="has 2 page"):
        read_image(str(tmp_path / "b#2.pdf#page=3"))


def test_encrypted_corrupt_and_empty_pdfs_are_per_file_errors(tmp_path):
    locked = encrypted_pdf(tmp_path / "locked.pdf")
    assert len(pdfium.PdfDocument(str(locked), password="secret")) == 1  # a real encrypted PDF
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog")
    empty = tmp_path / "empty.pdf"
    _write_pdf(empty, [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"])
    for path, why in ((locked, "encrypted PDF"), (broken, "not a readable PDF"), (empty, "without pages")):
        assert list(expand_pdf(str(path))) == [str(path)]  # kept whole, to fail when read
        with pytest.raises(ImageReadError, match=why) as caught:
            read_image(str(path))
        assert str(path) in str(caught.value)


def test_predict_pdfs_one_result_per_page_bad_ones_listed(cli, tmp_path, constant_ckpt):
    data = tmp_path / "in"
    data.mkdir()
    make_pdf(data / "doc.pdf", [(200, 100), (200, 100)], rotate={1: 90})
    write_image(data / "img.png", 40, 60)
    encrypted_pdf(data / "locked.pdf")
    (data / "broken.pdf").write_bytes(b"not a pdf at all")
    out = tmp_path / "out"
    code, _, err = cli("predict", data, "-w", constant_ckpt, "--output", out, "--device", "cpu", "--pdf-dpi", 72)
    assert code == 1
    lines = [line.split("\t") for line in (out / "det_results.txt").read_text().splitlines()]
    # a constant map is one box over the whole input: the box is the page's pixel size
    assert [(p.rsplit("/", 1)[1], json.loads(b)[0]["points"][2]) for p, b in lines] == [
        ("doc.pdf#page=1", [200, 100]), ("doc.pdf#page=2", [100, 200]), ("img.png", [60, 40])]
    assert sorted(p.name for p in (out / "vis").iterdir()) == ["doc_p1.png", "doc_p2.png", "img.png"]
    assert "2 image(s) could not be read" in err and "encrypted PDF" in err and "broken.pdf" in err
    assert "Traceback" not in err


def test_api_pdf_dpi_page_redraw_and_eval_label(tmp_path, constant_ckpt):
    from openocr_cli import Detector

    doc = make_pdf(tmp_path / "doc.pdf", [(100, 50), (100, 50)])
    det = Detector(str(constant_ckpt), device="cpu", pdf_dpi=144)
    results = det.predict(doc)
    assert [r.source for r in results] == [f"{doc}#page=1", f"{doc}#page=2"]
    assert [r.name for r in results] == ["doc.pdf#page=1", "doc.pdf#page=2"]
    assert results[1].to_line().startswith(f"{doc}#page=2\t")
    assert results[0].plot().shape == (100, 200, 3)  # read again at the run's dpi, not the default
    labels = tmp_path / "labels.txt"
    labels.write_text(label_line("doc.pdf#page=2", [{"transcription": "x",
                                                     "points": [[0, 0], [200, 0], [200, 100], [0, 100]]}]))
    assert det.evaluate(labels, tmp_path).hmean == pytest.approx(1.0)


def test_missing_pypdfium2_says_how_to_install(tmp_path, monkeypatch):
    import sys

    from openocr_cli.errors import UserError

    doc = make_pdf(tmp_path / "doc.pdf", [(100, 100)])
    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"openocr-det\[pdf\]"):
        collect_images([str(doc)])


def test_eval_report_draws_pdf_pages_at_the_runs_dpi(cli, tmp_path, constant_ckpt):
    make_pdf(tmp_path / "doc.pdf", [(100, 50)])
    labels = tmp_path / "labels.txt"  # a missed box, so the page is drawn in the report
    region = {"transcription": "x", "points": [[5, 5], [20, 5], [20, 9], [5, 9]]}
    labels.write_text(label_line("doc.pdf#page=1", [region]))
    code, _, err = cli("eval", "-w", constant_ckpt, "--data-dir", tmp_path, "--label-file", labels, "--device", "cpu",
                       "--pdf-dpi", "144", "--report", tmp_path / "rep")
    assert code == 0, err
    drawn = cv2.imread(str(next((tmp_path / "rep" / "images").glob("*.jpg"))))
    assert drawn.shape[:2] == (100, 200)  # 100 x 50 pt at 144 dpi, not at the default 200
