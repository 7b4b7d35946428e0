"""
JWT_SECRET read exactly as the auth-service reads it: a port of jjwt
0.12.6's base64 decoder, quirks included.

The auth-service (jjwt 0.12.6) keys with Decoders.BASE64.decode(secret), and
with the secret's UTF-8 bytes only when that throws.  Decoders.BASE64 is an
ExceptionPropagatingDecoder around Base64Decoder, which calls
io.jsonwebtoken.io.Base64.DEFAULT.decodeFast(CharSequence): in
github:jwtk/jjwt at tag 0.12.6, api/src/main/java/io/jsonwebtoken/io/
Base64.java lines 238-297 (the same from 0.12.0 to 0.12.7).  The wrapper
turns every exception decodeFast raises (its own DecodingException, but also
an index out of bounds or a negative array size) into a DecodingException,
so "throws" means any of them.  The port below follows decodeFast statement
by statement, Java quirks included; the comments give the lines of
Base64.java each part ports.
"""

from __future__ import annotations

import struct
from typing import List, Optional, Tuple

import attrs

#: Base64.BASE64_IALPHABET (lines 48-55): the value of each of the 256 chars
#: the table covers, -1 outside the alphabet.  "=" is 0, so a "=" that is not
#: one of the last two chars decodes as "A" would.
_JJWT_VALUES: Tuple[int, ...] = tuple(
    0 if code == ord("=")
    else "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".find(chr(code))
    for code in range(256)
)

_EQUALS = ord("=")
_CARRIAGE_RETURN = ord("\r")

#: decodeFast's line-break rule: RFC 2045 lines of 76 chars (19 groups of 4),
#: each followed by 2 chars ("\r\n") that are skipped unread.
_JJWT_LINE = 76
_JJWT_GROUPS_PER_LINE = 19


class _JJWTThrows(Exception):
    """
    Where decodeFast would throw; Decoders.BASE64 makes any such exception a
    DecodingException, so which one it was does not matter.
    """


def _utf16_units(text: str) -> List[int]:
    """
    C{text} as the Java String the auth-service holds: UTF-16 code units.
    decodeFast indexes code units, so a character outside the BMP counts
    twice (a surrogate pair), which changes its length arithmetic.
    """
    data = text.encode("utf-16-le", "surrogatepass")
    return list(struct.unpack(f"<{len(data) // 2}H", data))


def _char_at(units: List[int], index: int) -> int:
    """
    C{String.charAt}: an index out of range throws (a negative one too,
    which Python would count from the end).
    """
    if not 0 <= index < len(units):
        raise _JJWTThrows("StringIndexOutOfBoundsException")
    return units[index]


def _jjwt_value(unit: int) -> int:
    """
    C{IALPHABET[c]} as decodeFast's trimming loops read it (lines 249 and
    254): unchecked, so a char past 255 throws
    ArrayIndexOutOfBoundsException.
    """
    if unit > 255:
        raise _JJWTThrows("ArrayIndexOutOfBoundsException")
    return _JJWT_VALUES[unit]


def _jjwt_ctoi(unit: int) -> int:
    """
    Base64.ctoi (lines 217-224): a char's value, or DecodingException
    ("Illegal base64 character") outside the alphabet and "=".
    """
    value = _JJWT_VALUES[unit] if unit <= 255 else -1
    if value < 0:
        raise _JJWTThrows("DecodingException")
    return value


def _java_int(value: int) -> int:
    """
    C{value} wrapped to a Java C{int} (32-bit two's complement).
    """
    return (value + 2**31) % 2**32 - 2**31


def _java_divide(dividend: int, divisor: int) -> int:
    """
    Java's integer C{/}: rounded toward zero (Python's C{//} floors).
    """
    quotient = abs(dividend) // abs(divisor)
    return quotient if (dividend < 0) == (divisor < 0) else -quotient


@attrs.frozen
class _JJWTLayout:
    """
    What decodeFast works out before decoding (lines 246-264).

    @ivar start: the first char after trimming (C{sIx}).
    @ivar end: the last char after trimming (C{eIx}).
    @ivar pad: the C{=} counted as padding (C{pad}: 0, 1 or 2).
    @ivar separators: the line-break chars it will skip (C{sepCnt}).
    @ivar length: the number of bytes it returns (C{len}, never negative).
    """

    start: int
    end: int
    pad: int
    separators: int
    length: int


def _jjwt_layout(units: List[int]) -> _JJWTLayout:
    """
    Lines 246-264 of decodeFast for non-empty C{units}.

    @raise _JJWTThrows: where decodeFast would.
    """
    # 246-256: trim chars outside the alphabet from the start, then from the
    # end.  The end loop is not bounded by the start: text without a legal
    # char ends with end < start, a negative length, and a throw.
    start, end = 0, len(units) - 1
    while start < end and _jjwt_value(units[start]) < 0:
        start += 1
    while end > 0 and _jjwt_value(units[end]) < 0:
        end -= 1
    # 259: only the last two chars count as padding; charAt(end - 1) throws
    # when "=" is the first char and the last legal one.
    pad = 0
    if units[end] == _EQUALS:
        pad = 2 if _char_at(units, end - 1) == _EQUALS else 1
    count = end - start + 1
    # 261: line breaks are assumed when the untrimmed char 76 is "\r".
    separators = 0
    if len(units) > _JJWT_LINE and units[_JJWT_LINE] == _CARRIAGE_RETURN:
        separators = _java_divide(count, _JJWT_LINE + 2) << 1
    # 263-264: 6 bits a char, less a byte per "=", whatever the last group
    # holds: a last group of one char adds no byte (it is never read).
    length = ((count - separators) * 6 >> 3) - pad
    if length < 0:
        raise _JJWTThrows("NegativeArraySizeException")
    return _JJWTLayout(start, end, pad, separators, length)


def _jjwt_decode_fast(units: List[int]) -> bytes:
    """
    Base64.decodeFast(CharSequence) of jjwt 0.12.6 on UTF-16 C{units}.

    @raise _JJWTThrows: where decodeFast would.
    """
    if not units:  # 241-244
        return b""
    layout = _jjwt_layout(units)
    decoded = bytearray()
    index = layout.start
    # 267-283: whole groups of 4 chars into 3 bytes.
    groups = 0
    while len(decoded) < layout.length // 3 * 3:
        value = 0
        for shift in (18, 12, 6, 0):
            value |= _jjwt_ctoi(_char_at(units, index)) << shift
            index += 1
        decoded += bytes([(value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF])
        if layout.separators > 0:
            groups += 1
            if groups == _JJWT_GROUPS_PER_LINE:
                index += 2  # Whatever the two chars are.
                groups = 0
    if len(decoded) < layout.length:
        # 285-296: the last 1 or 2 bytes, from every char left before the
        # padding; past the fourth, Java masks the shift count to 5 bits.
        value = 0
        j = 0
        while index <= layout.end - layout.pad:
            char_value = _jjwt_ctoi(_char_at(units, index))
            value = _java_int(value | char_value << ((18 - j * 6) & 31))
            index += 1
            j += 1
        shift = 16
        while len(decoded) < layout.length:
            decoded.append((value >> shift) & 0xFF)
            shift -= 8
    return bytes(decoded)


def jjwt_base64_decode(text: str) -> Optional[bytes]:
    """
    The bytes jjwt's C{Decoders.BASE64.decode(text)} returns (jjwt 0.12.6,
    C{io.jsonwebtoken.io.Base64.decodeFast}), or L{None} where it throws.

    Neither RFC 4648 nor Python's base64: chars outside C{A-Z a-z 0-9 + /
    =} are skipped at both ends (a trailing newline, spaces); padding may be
    missing; only the last two chars count as padding, and a C{=} before
    them decodes as C{A}; each C{=} counted as padding takes a byte off the
    length, even where nothing was missing (C{"QUJD="} is two bytes, not
    three); a last group of one char is dropped; any other
    char outside the alphabet between the first and the last legal one
    throws (a base64url C{-} or C{_}, a space), except the two chars after
    each 76 when char 76 is C{"\\r"} (RFC 2045 lines).  An empty C{text} is
    no bytes.
    """
    try:
        return _jjwt_decode_fast(_utf16_units(text))
    except _JJWTThrows:
        return None

