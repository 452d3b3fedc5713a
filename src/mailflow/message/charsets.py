"""Decoding text of a declared, undeclared or wrong charset: never raises, notes guesses."""

from __future__ import annotations

import codecs
import functools

from mailflow.message.defects import note, short_repr

_MAX_CHARSET_LEN = 40


def decode_8bit(data: bytes) -> tuple[str, bool]:
    """Text with no usable charset: UTF-8 if valid, else windows-1252; True if it fell back."""
    if data.isascii():
        return data.decode("ascii"), False
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace"), True


@functools.lru_cache(maxsize=256)
def _codec(charset: str) -> str | None:
    """Python's codec name for a declared charset, or None if unknown or not a text codec."""
    name = charset.strip().strip("\"'").partition("*")[0].lower()  # RFC 2231 "utf-8*fr"
    if not name:
        return None
    try:
        info = codecs.lookup(name)
    except Exception:  # LookupError, or ValueError for a NUL in the name
        return None
    # base64, zlib, rot13... are bytes transforms, not charsets (and zlib is a bomb).
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def decode_charset(data: bytes, charset: str | None, where: str, defects: list[str]) -> str:
    """Decode with the declared charset if Python knows it, else UTF-8, else windows-1252."""
    if not charset:
        text, fell_back = decode_8bit(data)
        if fell_back:
            note(defects, f"{where}: undeclared 8-bit text decoded as windows-1252")
        return text
    codec = _codec(charset) if len(charset) <= _MAX_CHARSET_LEN else None
    if codec is None:
        text, _ = decode_8bit(data)
        note(defects, f"{where}: unknown charset {short_repr(charset)}")
        return text
    if codec == "ascii":
        text, fell_back = decode_8bit(data)
        if not data.isascii():
            used = "windows-1252" if fell_back else "UTF-8"
            note(defects, f"{where}: 8-bit bytes in us-ascii text decoded as {used}")
        return text
    declared = _as_declared(data, codec)
    if declared is not None:
        return declared
    note(defects, f"{where}: text is not valid {short_repr(charset)}")
    if codec != "utf-8":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        try:
            return data.decode(codec, "replace")
        except Exception:
            pass
    return data.decode("cp1252", "replace")


def decode_strict(data: bytes, charset: str) -> str | None:
    """``data`` in its declared charset, or None if Python does not know the charset or
    the bytes are not of it: for text shown to a person, where a guess would show."""
    codec = _codec(charset) if len(charset) <= _MAX_CHARSET_LEN else None
    if codec is None:
        return None
    return _as_declared(data, codec)


def _as_declared(data: bytes, codec: str) -> str | None:
    """``data`` in a codec Python knows, or None if the bytes are not of it."""
    if codec == "iso8859-1":
        # What senders label latin-1 is in practice windows-1252 (as browsers assume).
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    try:
        return data.decode(codec)
    except Exception:  # UnicodeDecodeError, or UnicodeError from codecs like 'undefined'
        return None


def normalise_newlines(text: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text
