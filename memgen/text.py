"""Text of unknown encoding, as crawls and spreadsheets write it."""

from __future__ import annotations

_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"),
         (b"\xfe\xff", "utf-16"))  # UTF-32's first: its little-endian BOM begins with UTF-16's


def decode_text(data: bytes | None) -> str | None:
    """Bytes as text, stripped: UTF-16 or UTF-32 after their byte-order mark; UTF-8 (a BOM
    dropped); UTF-8 with a damaged character (a caption cut mid-character) where the rest is
    UTF-8's multibyte text; else Windows-1252 (crawls hold it, and Excel on Windows saves its
    CSVs in it), latin-1 with curly quotes and dashes, else latin-1 itself, which maps every
    byte: no character is lost to U+FFFD."""
    if data is None:
        return None
    for bom, encoding in _BOMS:  # Windows Notepad's "Unicode" is UTF-16 with one
        if data.startswith(bom):
            return data.decode(encoding, errors="replace").strip()
    try:
        return data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        pass
    mended = data.decode("utf-8-sig", errors="replace")
    if any(ord(ch) > 0x7F and ch != "\ufffd" for ch in mended):
        return mended.strip()
    try:
        return data.decode("cp1252").strip()
    except UnicodeDecodeError:
        return data.decode("latin-1").strip()
