from __future__ import annotations

import json
from importlib import resources

import pytest

from perlinsos_shared.wilayah import (
    Kecamatan,
    batam_kecamatan,
    find_kecamatan,
    find_kelurahan,
    is_batam_address,
    normalise_place,
    wilayah_source,
)


def test_twelve_kecamatan_with_kemendagri_codes() -> None:
    kecamatan = batam_kecamatan()
    assert [k.code for k in kecamatan] == [f"2171{i:02d}" for i in range(1, 13)]
    assert kecamatan[0] == find_kecamatan("Belakang Padang")
    assert find_kecamatan("Sei Beduk") == kecamatan[6]
    assert find_kecamatan("Batam Kota") == kecamatan[9]
    assert find_kecamatan("Batu Aji") == kecamatan[11]
    assert all(isinstance(k, Kecamatan) and isinstance(k.kelurahan, tuple) for k in kecamatan)


def test_sixty_four_kelurahan() -> None:
    kecamatan = batam_kecamatan()
    assert sum(len(k.kelurahan) for k in kecamatan) == 64
    names = [name for k in kecamatan for name in k.kelurahan]
    assert len({normalise_place(n) for n in names}) == 64
    counts = {k.name: len(k.kelurahan) for k in kecamatan}
    assert counts["Galang"] == 8 and counts["Sekupang"] == 7 and counts["Lubuk Baja"] == 5


def test_data_file_is_marked_unverified() -> None:
    raw = resources.files("perlinsos_shared").joinpath("data").joinpath("batam_wilayah.json")
    document = json.loads(raw.read_text("utf-8"))
    assert document["verified"] is False
    assert document["source"]
    assert wilayah_source() == (document["source"], False)


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("Sei Beduk", "sungai beduk"),
        ("SEI BEDUK", "sungai beduk"),
        ("Sei. Beduk", "sungai beduk"),
        ("Sungai  Beduk", "sungai beduk"),
        ("Kecamatan Sei Beduk", "sungai beduk"),
        ("kec.sei beduk", "sungai beduk"),
        ("kel. tanjung piayu", "tanjung piayu"),
        ("Tj. Piayu", "tanjung piayu"),
        ("Tj Piayu", "tanjung piayu"),
        ("Kelurahan Tanjung-Piayu", "tanjung piayu"),
        ("P. Buluh", "pulau buluh"),
        ("Pulau Buluh", "pulau buluh"),
        ("Kp. Seraya", "kampung seraya"),
        ("  batu   ampar ", "batu ampar"),
        ("Kelurahan", "kelurahan"),
    ],
)
def test_normalise_place(spelling: str, expected: str) -> None:
    assert normalise_place(spelling) == expected


@pytest.mark.parametrize(
    "spelling",
    ["SEI BEDUK", "Sungai Beduk", "sei beduk", "Kec. Sei Beduk", "Sei.Beduk", "217107", "21.71.07"],
)
def test_find_kecamatan_tolerates_spellings(spelling: str) -> None:
    found = find_kecamatan(spelling)
    assert found is not None and found.name == "Sei Beduk" and found.code == "217107"


@pytest.mark.parametrize("name", ["", "   ", "Bintan Timur", "Kota Batam", "2171", "217199"])
def test_find_kecamatan_unknown(name: str) -> None:
    assert find_kecamatan(name) is None


@pytest.mark.parametrize(
    ("kecamatan", "kelurahan"),
    [
        ("SEI BEDUK", "kel. tanjung piayu"),
        ("Sungai Beduk", "Tj. Piayu"),
        ("Kec. Sei Beduk", "Tanjungpiayu"),
        ("Batam Kota", "Sei Panas"),
        ("batam kota", "SUNGAI PANAS"),
        ("Batu Ampar", "Kp. Seraya"),
        ("Belakang Padang", "P. Terong"),
        ("Sagulung", "Sei Langkai"),
        ("Lubuk Baja", "Lubuk Baja Kota"),
    ],
)
def test_is_batam_address_tolerates_spellings(kecamatan: str, kelurahan: str) -> None:
    assert is_batam_address(kecamatan, kelurahan)


@pytest.mark.parametrize(
    ("kecamatan", "kelurahan"),
    [
        ("Sekupang", "Tanjung Piayu"),  # a Batam kelurahan, but of Sei Beduk
        ("Bintan Timur", "Kijang Kota"),  # Kabupaten Bintan
        ("Sei Beduk", ""),
        ("", "Tanjung Piayu"),
        ("Sei Beduk", "Piayu"),
        ("Lubuk Baja", "Lubuk Baja"),
    ],
)
def test_is_batam_address_refuses(kecamatan: str, kelurahan: str) -> None:
    assert not is_batam_address(kecamatan, kelurahan)


@pytest.mark.parametrize(
    ("kecamatan", "spelling", "official"),
    [
        ("Belakang Padang", "Pulau Terung", "Pulau Terung"),  # Kepmendagri 300.2.2-2138/2025
        ("Belakang Padang", "Pulau Terong", "Pulau Terung"),  # the old spelling, an alias
        ("Belakang Padang", "P. Terong", "Pulau Terung"),
        ("Belakang Padang", "PULAU TERUNG", "Pulau Terung"),
        ("Bulang", "Pulau Setokok", "Pulau Setokok"),  # Kepmendagri 300.2.2-2138/2025
        ("Bulang", "Setokok", "Pulau Setokok"),  # the old spelling, an alias
        ("Bulang", "P. Setokok", "Pulau Setokok"),
    ],
)
def test_official_kelurahan_names_and_old_spellings(
    kecamatan: str, spelling: str, official: str
) -> None:
    found = find_kelurahan(kecamatan, spelling)
    assert found is not None and found[1] == official


def test_aliases_stay_in_their_kecamatan_and_the_source_names_the_decree() -> None:
    assert find_kelurahan("Bulang", "Pulau Terong") is None
    assert find_kelurahan("Sekupang", "Setokok") is None
    source, verified = wilayah_source()
    assert "300.2.2-2138" in source and not verified
    names = {n for k in batam_kecamatan() for n in k.kelurahan}
    assert {"Pulau Terung", "Pulau Setokok"} <= names
    assert not {"Pulau Terong", "Setokok"} & names


def test_every_published_kelurahan_is_batam() -> None:
    for kecamatan in batam_kecamatan():
        for kelurahan in kecamatan.kelurahan:
            assert find_kelurahan(kecamatan.name, kelurahan) == (kecamatan, kelurahan)
            assert is_batam_address(kecamatan.name.upper(), f"Kel. {kelurahan.lower()}")


def test_find_kelurahan_returns_canonical_names() -> None:
    found = find_kelurahan("kec sei beduk", "TJ.PIAYU")
    assert found is not None
    assert found[0].code == "217107" and found[1] == "Tanjung Piayu"
