"""Class schemes: official codes and colours, code -> index encoding, unambiguous caption terms."""

from __future__ import annotations

import numpy as np
import pytest

from rsbuild.errors import ConfigError
from rsbuild.schemes import NODATA_INDEX, SCHEMES, ClassInfo, Scheme, get_scheme


def test_esa_worldcover_codes_names_and_official_colours():
    scheme = get_scheme("esa_worldcover")
    assert [c.code for c in scheme.classes] == [10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100]
    assert scheme.nodata_codes == (0,)
    by_code = {c.code: c for c in scheme.classes}
    assert by_code[10].name == "tree cover" and by_code[10].color == (0, 100, 0)
    assert by_code[40].name == "cropland" and by_code[40].color == (240, 150, 255)
    assert by_code[50].name == "built-up area" and by_code[50].color == (250, 0, 0)
    assert by_code[80].name == "water" and by_code[80].color == (0, 100, 200)
    assert by_code[95].color == (0, 207, 117)
    assert by_code[100].color == (250, 230, 160)


def test_dynamic_world_and_io_lulc_codes_and_palettes():
    dw = get_scheme("dynamic_world")
    assert [c.code for c in dw.classes] == list(range(9))
    assert dw.classes[0].name == "water" and dw.classes[0].color == (0x41, 0x9B, 0xDF)
    assert dw.classes[8].name == "snow and ice" and dw.classes[8].color == (0xB3, 0x9F, 0xE1)
    io = get_scheme("io_lulc")
    assert [c.code for c in io.classes] == [1, 2, 4, 5, 7, 8, 9, 10, 11]
    assert io.nodata_codes == (0,)
    assert io.classes[io.index_of("rangeland")].color == (0xE3, 0xE2, 0xC3)
    assert io.classes[io.index_of("snow and ice")].color == (0xA8, 0xEB, 0xFF)


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_names_are_lowercase_and_every_term_names_one_class(name):
    scheme = get_scheme(name)
    owners: dict[str, str] = {}
    for info in scheme.classes:
        assert info.name == info.name.lower()
        for term in info.terms:
            assert owners.setdefault(term, info.name) == info.name, f"{term!r} is ambiguous in {name}"
    assert scheme.terms() == owners


@pytest.mark.parametrize(
    ("scheme_name", "word", "expected"),
    [
        ("esa_worldcover", "river", "water"),
        ("esa_worldcover", "Reservoir", "water"),
        ("esa_worldcover", "forest", "tree cover"),
        ("esa_worldcover", "woodland", "tree cover"),
        ("esa_worldcover", "city", "built-up area"),
        ("esa_worldcover", "settlement", "built-up area"),
        ("esa_worldcover", "farmland", "cropland"),
        ("esa_worldcover", "agricultural  land", "cropland"),
        ("esa_worldcover", "marsh", "herbaceous wetland"),
        ("dynamic_world", "forest", "trees"),
        ("dynamic_world", "fields", "crops"),
        ("dynamic_world", "urban", "built-up area"),
        ("io_lulc", "meadow", "rangeland"),
        ("io_lulc", "shrubs", "rangeland"),
        ("io_lulc", "lake", "water"),
    ],
)
def test_caption_words_resolve_to_their_class(scheme_name, word, expected):
    assert get_scheme(scheme_name).class_for_term(word) == expected


def test_unrelated_word_resolves_to_nothing():
    assert get_scheme("esa_worldcover").class_for_term("volcano") is None


def test_encode_maps_codes_and_counts_unknown_codes():
    scheme = get_scheme("esa_worldcover")
    codes = np.array([[0, 10, 20, 33], [80, 95, 100, 255]], dtype=np.uint8)
    index, unknown = scheme.encode(codes)
    assert index.dtype == np.uint8
    tree, water = scheme.index_of("tree cover"), scheme.index_of("water")
    assert index[0, 1] == tree and index[1, 0] == water
    assert index[1, 2] == scheme.index_of("moss and lichen")
    assert index[0, 0] == NODATA_INDEX  # declared nodata: not unknown
    assert index[0, 3] == NODATA_INDEX and index[1, 3] == NODATA_INDEX
    assert unknown == 2  # 33 and 255


def test_encode_handles_wide_signed_and_float_codes():
    scheme = get_scheme("io_lulc")
    index, unknown = scheme.encode(np.array([-5, 0, 1, 70000, 11], dtype=np.int32))
    assert index.tolist() == [NODATA_INDEX, NODATA_INDEX, scheme.index_of("water"), NODATA_INDEX,
                              scheme.index_of("rangeland")]
    assert unknown == 2
    index, unknown = scheme.encode(np.array([np.nan, 2.0, 2.5, -9999.0]), extra_nodata=[-9999.0])
    assert index.tolist() == [NODATA_INDEX, scheme.index_of("trees"), NODATA_INDEX, NODATA_INDEX]
    assert unknown == 1  # 2.5 only: NaN and the raster's own nodata are nodata


def test_encode_extra_nodata_is_not_unknown():
    scheme = get_scheme("dynamic_world")  # declares no nodata code of its own
    index, unknown = scheme.encode(np.array([0, 255, 9], dtype=np.uint8), extra_nodata=[255])
    assert index.tolist() == [0, NODATA_INDEX, NODATA_INDEX]
    assert unknown == 1


def test_classify_marks_the_unknown_pixels():
    scheme = get_scheme("esa_worldcover")
    index, unknown = scheme.classify(np.array([[0, 10], [33, 7]], dtype=np.uint16), extra_nodata=[7])
    assert index.tolist() == [[NODATA_INDEX, scheme.index_of("tree cover")], [NODATA_INDEX, NODATA_INDEX]]
    assert unknown.tolist() == [[False, False], [True, False]]


def test_colormap_paints_class_indices():
    scheme = get_scheme("esa_worldcover")
    table = scheme.colormap()
    assert table.shape == (256, 3)
    assert tuple(table[scheme.index_of("water")]) == (0, 100, 200)
    assert tuple(table[NODATA_INDEX]) == (0, 0, 0)


def test_index_of_unknown_class_names_the_choices():
    with pytest.raises(ValueError, match="tree cover"):
        get_scheme("esa_worldcover").index_of("jungle")


def test_unknown_scheme_is_a_config_error_listing_choices():
    with pytest.raises(ConfigError, match="esa_worldcover"):
        get_scheme("corine")


def test_scheme_rejects_a_term_shared_by_two_classes():
    classes = (
        ClassInfo(1, "water", (0, 0, 255), ("lake",)),
        ClassInfo(2, "wetland", (0, 255, 0), ("lake",)),
    )
    with pytest.raises(ValueError, match="lake"):
        Scheme("bad", "Bad", "1", "none", classes)


def test_to_json_lists_classes_in_index_order():
    doc = get_scheme("io_lulc").to_json()
    assert [c["index"] for c in doc["classes"]] == list(range(9))
    assert doc["classes"][0] == {"index": 0, "code": 1, "name": "water", "color": [0x41, 0x9B, 0xDF],
                                 "aliases": list(get_scheme("io_lulc").classes[0].aliases)}
