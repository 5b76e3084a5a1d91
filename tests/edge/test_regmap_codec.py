"""Register words <-> raw values for every register type and both word orders.

The expectation is written here with ``struct`` alone (the Modbus convention: each
16-bit word big-endian, words most significant first; ``little`` word order reverses
the words of one value), independently of how edge_agent.regmap does it.

regmap converts with pymodbus (ModbusClientMixin.convert_to/from_registers), which packs with
struct too: NaN is written as the quiet NaN and any NaN pattern reads back as NaN (the reader,
not the converter, refuses a NaN total per meter), float32 rounds to the nearest single, signed
and unsigned come from the DATATYPE's struct code. Where it differs: it refuses a float for an
integer type, so encode_raw passes int(raw) (an integral float is taken, as before).
"""

import math
import struct

import pytest

from edge_agent.regmap import Register

FLOAT32_MAX = struct.unpack(">f", bytes.fromhex("7F7FFFFF"))[0]
FLOAT32_MIN_SUB = struct.unpack(">f", bytes.fromhex("00000001"))[0]  # the smallest subnormal

CASES = {  # type -> (struct code, raw values every map may hold)
    "uint16": ("H", [0, 1, 230, 0x7FFF, 0x8000, 0xFFFF]),
    "int16": ("h", [0, 1, -1, -230, 0x7FFF, -0x8000]),
    "uint32": ("I", [0, 1, 65535, 65536, 123456789, 2**31, 2**32 - 1]),
    "int32": ("i", [0, 1, -1, -65536, 123456789, -123456789, 2**31 - 1, -(2**31)]),
    "uint64": ("Q", [0, 1, 2**32, 2**53 + 1, 2**63, 2**64 - 1]),
    "int64": ("q", [0, -1, -(2**32), 2**63 - 1, -(2**63)]),
    "float32": ("f", [0.0, -0.0, 1.5, -230.25, 1234.5, FLOAT32_MAX, -FLOAT32_MAX, FLOAT32_MIN_SUB,
                      math.inf, -math.inf]),
    "float64": ("d", [0.0, -0.0, 1.5, -230.25, 98765.4321, 1e308, -1e308, 5e-324, math.inf, -math.inf]),
}
ORDERS = ("big", "little")


def expected_words(code: str, value, word_order: str) -> list[int]:
    data = struct.pack(">" + code, value)
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    return words[::-1] if word_order == "little" else words


def same_number(a, b) -> bool:
    """Equal, with the sign of a zero and the type (int or float) counted."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b and math.copysign(1, a) == math.copysign(1, b)


@pytest.mark.parametrize("word_order", ORDERS)
@pytest.mark.parametrize("rtype", CASES)
def test_every_type_encodes_and_decodes_as_struct_packs_it(rtype, word_order):
    code, values = CASES[rtype]
    reg = Register("v", 100, rtype, word_order)
    for v in values:
        words = expected_words(code, v, word_order)
        assert len(words) == reg.size
        assert reg.encode_raw(v) == words, (rtype, word_order, v)
        assert same_number(reg.decode_raw(words), v), (rtype, word_order, v)


@pytest.mark.parametrize("word_order", ORDERS)
@pytest.mark.parametrize("rtype", ["float32", "float64"])
def test_nan_is_encoded_as_the_quiet_nan_and_any_nan_decodes_as_nan(rtype, word_order):
    code = CASES[rtype][0]
    reg = Register("v", 0, rtype, word_order)
    assert reg.encode_raw(math.nan) == expected_words(code, math.nan, word_order)
    most_significant = reg.encode_raw(math.nan)[-1 if word_order == "little" else 0]
    assert most_significant == (0x7FF8 if code == "d" else 0x7FC0)
    # what meters send for "no value": the quiet NaN, all ones, a negative NaN with a payload
    for hexword in (("7FC0", "0000"), ("FFFF", "FFFF"), ("FF80", "0001")) if code == "f" else (
            ("7FF8", "0000", "0000", "0000"), ("FFFF", "FFFF", "FFFF", "FFFF")):
        words = [int(w, 16) for w in hexword]
        raw = reg.decode_raw(words[::-1] if word_order == "little" else words)
        assert isinstance(raw, float) and math.isnan(raw), (rtype, word_order, hexword)


@pytest.mark.parametrize("word_order", ORDERS)
def test_float32_rounds_to_the_nearest_single(word_order):
    reg = Register("v", 0, "float32", word_order)
    for v in (0.1, 98765.4321, 4321.123456789, -1e-40):
        single = struct.unpack(">f", struct.pack(">f", v))[0]
        assert reg.encode_raw(v) == expected_words("f", v, word_order)
        assert reg.decode_raw(reg.encode_raw(v)) == single


@pytest.mark.parametrize("rtype", ["uint16", "int16", "uint32", "int32", "uint64", "int64"])
def test_integer_registers_take_an_integral_float(rtype):
    reg = Register("v", 0, rtype, "little")
    assert reg.encode_raw(7.0) == reg.encode_raw(7)
    assert type(reg.decode_raw(reg.encode_raw(7.0))) is int


@pytest.mark.parametrize("rtype,value", [("uint16", 0x10000), ("uint16", -1), ("int16", 0x8000),
                                         ("uint32", 2**32), ("int32", -(2**31) - 1), ("uint64", -1),
                                         ("int64", 2**63)])
def test_a_raw_value_out_of_the_types_range_is_refused(rtype, value):
    with pytest.raises(struct.error):
        Register("v", 0, rtype).encode_raw(value)


def test_a_double_beyond_any_single_is_refused_by_float32():
    with pytest.raises(OverflowError):
        Register("v", 0, "float32").encode_raw(1e39)


def test_words_of_another_size_are_refused():
    with pytest.raises(Exception, match="expected multiple of 2"):
        Register("v", 0, "uint32").decode_raw([1, 2, 3])


def test_raw_for_scales_rounds_and_wraps_as_the_meter_would():
    assert Register("e", 0, "uint32", scale=0.001).raw_for(4294967.297) == 1  # wraps past 2**32 - 1
    assert Register("e", 0, "int32", scale=0.01, rollover=True).raw_for(-0.01) == 2**32 - 1
    assert Register("p", 0, "int16", scale=0.1).raw_for(-23.04) == -230  # rounded, signed kept
    assert Register("e", 0, "float32", scale=0.5).raw_for(3.0) == 6.0
    assert type(Register("e", 0, "float64").raw_for(3)) is float
    assert type(Register("e", 0, "uint64").raw_for(3.0)) is int
