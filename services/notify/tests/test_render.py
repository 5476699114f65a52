"""Every template, rendered with the longest realistic values, is GSM-7 and one part."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from perlinsos_notify.render import (
    SINGLE_PART,
    TEMPLATE_NAMES,
    is_gsm7,
    render,
    shorten,
    template_set,
    to_gsm7,
)
from perlinsos_shared.clock import BATAM_TZ
from perlinsos_shared.events import DecisionReason, EligibilityDecided, Occupation

BRAND = "Perlinsos Batam"
LONGEST_HELP_LINE = "0811-7788-9900"  # 14: a mobile help line with separators
FIRST_NAMES = [
    "Sriwahyuningsihwati",  # longer than the limit: cut
    "Ṡyahrül",  # dots and diaeresis: transliterated
    "Nguyễn",
    "Çağlar",
    "Dewi’s",  # a curly quote would switch the message to UCS-2
    "Łukasz",
    "Ñoman😊",  # an emoji is dropped
    "李",  # nothing transliterable: a neutral word instead
    "  ",
]
LONGEST_DATE = date(2025, 9, 30)  # "30 Sep 2025": every date renders in 10-11 characters
REASONS = [
    DecisionReason(code="DOMICILE_NOT_BATAM", message="Alamat KTP tidak berada di Kota Batam"),
    DecisionReason(code="AGE_OUT_OF_RANGE", message="Usia di luar batas program"),
    DecisionReason(code="ALREADY_BPJS_MEMBER", message="Sudah peserta"),
    DecisionReason(code="OCCUPATION_NOT_COVERED", message="Pekerjaan tidak termasuk"),
    DecisionReason(
        code="SOMETHING_NEW",
        message="Dokumen “SK” kelurahan belum dilampirkan — mohon lengkapi melalui kantor "
        "kelurahan setempat dan ajukan ulang pendaftaran Anda sebelum akhir bulan ini",
    ),
]


def decision(
    template: str, first_name: str, reason: DecisionReason | None = None
) -> EligibilityDecided:
    outcome = {"promoted": "eligible"}.get(template, template)
    return EligibilityDecided(
        decision_id="d-1",
        participant_id="p-1",
        outcome=outcome,  # type: ignore[arg-type]
        promoted=template == "promoted",
        reasons=[reason] if reason else [],
        cover_start=LONGEST_DATE if outcome in ("eligible", "exited") else None,
        cover_end=LONGEST_DATE if outcome == "exited" else None,
        rule_version="test",
        occupation=Occupation.OJEK_DARING,
        agency="DISHUB",
        request_id="r-1",
        first_name=first_name,
        phone_e164="+6281234567890",
        decided_at=datetime(2025, 9, 30, 23, 59, tzinfo=BATAM_TZ),
        nik="2171015509900001",
    )


def test_every_template_is_in_the_data_file() -> None:
    assert set(TEMPLATE_NAMES) <= set(template_set().templates)


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
@pytest.mark.parametrize("first_name", FIRST_NAMES)
def test_every_template_fits_one_gsm7_part(template: str, first_name: str) -> None:
    reasons = REASONS if template == "ineligible" else [None]
    for reason in reasons:
        sms = render(decision(template, first_name, reason), BRAND, LONGEST_HELP_LINE)
        assert sms.template == template
        assert is_gsm7(sms.text), sms.text
        assert len(sms.text) <= SINGLE_PART, (len(sms.text), sms.text)
        assert sms.text.startswith(BRAND + ":")
        assert LONGEST_HELP_LINE in sms.text
        assert "BPJS Ketenagakerjaan" in sms.text
        assert "2171015509900001" not in sms.text and "550990" not in sms.text  # no NIK
        words = sms.text.lower().replace(",", " ").replace(".", " ").split()
        assert "pin" not in words and "code" not in words and "kode" not in words


@pytest.mark.parametrize("template", ["eligible", "promoted"])
def test_cover_messages_say_protection_and_start(template: str) -> None:
    text = render(decision(template, "Ṡyahrül"), BRAND, LONGEST_HELP_LINE).text
    assert "Syahrul" in text
    assert "JKK" in text and "JKM" in text and "kecelakaan kerja" in text and "kematian" in text
    assert "30 Sep 2025" in text


def test_waitlisted_and_exited_name_the_protection() -> None:
    waiting = render(decision("waitlisted", "Budi"), BRAND, LONGEST_HELP_LINE).text
    assert "daftar tunggu" in waiting and "JKK & JKM" in waiting
    exited = render(decision("exited", "Budi"), BRAND, LONGEST_HELP_LINE).text
    assert "berakhir 30 Sep 2025" in exited


def test_refusal_gives_the_first_reason_and_how_to_object() -> None:
    text = render(decision("ineligible", "Budi", REASONS[0]), BRAND, LONGEST_HELP_LINE).text
    assert "alamat KTP tidak di Kota Batam" in text
    assert "Keberatan" in text
    long = render(decision("ineligible", "Budi", REASONS[-1]), BRAND, LONGEST_HELP_LINE).text
    assert '"SK"' in long and "..." in long  # curly quotes folded, the reason shortened


def test_a_surprisingly_long_brand_still_gives_one_part() -> None:
    sms = render(
        decision("eligible", "Budi"), "Program Perlindungan Sosial Kota Batam", "0778-1234567"
    )
    assert len(sms.text) <= SINGLE_PART and is_gsm7(sms.text)


def test_transliteration_and_shortening() -> None:
    assert to_gsm7("Ṡyahrül  “Ayu”\n") == 'Syahrul "Ayu"'
    assert to_gsm7("😊") == ""
    assert shorten("satu dua tiga empat", 12) == "satu dua..."
    assert shorten("pendek", 12) == "pendek"
