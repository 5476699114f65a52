"""Every template, rendered with the longest realistic values, is GSM-7 and one part."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from perlinsos_notify import render as render_module
from perlinsos_notify.render import (
    SINGLE_PART,
    TEMPLATE_NAMES,
    Sms,
    TemplateError,
    check_fits,
    is_gsm7,
    name_word,
    render,
    shorten,
    template_set,
    to_gsm7,
)
from perlinsos_shared.clock import BATAM_TZ
from perlinsos_shared.events import (
    DecisionReason,
    EligibilityDecided,
    ExitReason,
    Occupation,
)

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
    template: str,
    first_name: str,
    reason: DecisionReason | None = None,
    *,
    full_name: str | None = None,
    sex: str | None = None,
    exit_reason: ExitReason | None = None,
) -> EligibilityDecided:
    outcome = {"promoted": "eligible", "deceased": "exited"}.get(template, template)
    if template == "deceased":
        exit_reason = ExitReason.DECEASED
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
        full_name=full_name,
        sex=sex,  # type: ignore[arg-type]
        exit_reason=exit_reason,
    )


def sms(d: EligibilityDecided, brand: str = BRAND, help_line: str = LONGEST_HELP_LINE) -> Sms:
    out = render(d, brand, help_line)
    assert out is not None
    return out


def test_every_template_is_in_the_data_file() -> None:
    assert set(TEMPLATE_NAMES) <= set(template_set().templates)


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
@pytest.mark.parametrize("first_name", FIRST_NAMES)
@pytest.mark.parametrize("sex", ["L", "P", None])
def test_every_template_fits_one_gsm7_part(template: str, first_name: str, sex: str) -> None:
    reasons = REASONS if template in ("ineligible", "waitlisted") else [None]
    for reason in reasons:
        out = sms(decision(template, first_name, reason, full_name=first_name, sex=sex))
        assert out.template == template
        assert is_gsm7(out.text), out.text
        assert len(out.text) <= SINGLE_PART, (len(out.text), out.text)
        assert out.text.startswith(BRAND + ":")
        assert LONGEST_HELP_LINE in out.text
        assert "BPJS Ketenagakerjaan" in out.text
        assert "2171015509900001" not in out.text and "550990" not in out.text  # no NIK
        words = out.text.lower().replace(",", " ").replace(".", " ").split()
        assert "pin" not in words and "code" not in words and "kode" not in words


@pytest.mark.parametrize("template", ["eligible", "promoted"])
def test_cover_messages_say_protection_and_start(template: str) -> None:
    text = sms(decision(template, "Ṡyahrül", full_name="Ṡyahrül Lubis", sex="L")).text
    assert "Bapak Syahrul," in text
    assert "kecelakaan kerja & kematian" in text
    assert "30 Sep 2025" in text
    assert "kuota ada" not in text


def test_waitlisted_and_exited_name_the_protection() -> None:
    waiting = sms(decision("waitlisted", "Budi")).text
    assert "belum terlindungi" in waiting and "BPJS Ketenagakerjaan" in waiting
    exited = sms(decision("exited", "Budi")).text
    assert "berakhir 30 Sep 2025" in exited


# --- a death is answered with condolences, never "your cover ended" ------------------


def test_a_deceased_exit_gets_condolences_and_how_the_heirs_claim_jkm() -> None:
    d = decision(
        "exited",
        "Hj.",
        full_name="Hj. Siti Aminah",
        sex="P",
        exit_reason=ExitReason.DECEASED,
    )
    out = sms(d)
    assert out.template == "deceased"
    assert out.text == (
        "Perlinsos Batam: Turut berduka atas wafatnya Ibu Siti. Ahli waris dapat klaim "
        "santunan kematian (JKM) di BPJS Ketenagakerjaan. Info 0811-7788-9900"
    )
    assert "berakhir" not in out.text and len(out.text) <= SINGLE_PART


@pytest.mark.parametrize(
    "why", [ExitReason.MOVED_AWAY, ExitReason.ROLE_ENDED, ExitReason.OTHER, None]
)
def test_other_exits_keep_the_cover_ended_text(why: ExitReason | None) -> None:
    out = sms(decision("exited", "Budi", full_name="Budi Santoso", sex="L", exit_reason=why))
    assert out.template == "exited"
    assert "Bapak Budi" in out.text and "berakhir 30 Sep 2025" in out.text
    assert "berduka" not in out.text


def test_an_empty_deceased_template_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    ts = template_set()
    quiet = type(ts)(
        {**ts.templates, "deceased": ""}, ts.first_name_limit, ts.reasons, ts.names, 30
    )
    monkeypatch.setattr(render_module, "template_set", lambda: quiet)
    assert render(decision("deceased", "Budi"), BRAND, LONGEST_HELP_LINE) is None
    assert render(decision("exited", "Budi"), BRAND, LONGEST_HELP_LINE) is not None


# --- names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("full_name", "sex", "greeting"),
    [
        ("M. Syahrul Lubis", "L", "Bapak Syahrul"),  # an initial
        ("M.Syahrul Lubis", "L", "Bapak Syahrul"),  # no space after the dot
        ("Hj. Siti Aminah", "P", "Ibu Siti"),
        ("H. Abdul Rahman", "L", "Bapak Abdul"),
        ("Hajjah Nurhayati", "P", "Ibu Nurhayati"),
        ("Ir. Bambang Sutrisno", "L", "Bapak Bambang"),
        ("Dr. Ratna Dewi", "P", "Ibu Ratna"),
        ("Drs. H. Ahmad Yani", "L", "Bapak Ahmad"),  # two titles
        ("Muh. Ridwan", "L", "Bapak Ridwan"),
        ("Moh Ilham", "L", "Bapak Ilham"),
        ("Muhammad Rizki Pratama", "L", "Bapak Rizki"),
        ("I Made Sukarta", "L", "Bapak Sukarta"),
        ("I Wayan Gede Arsana", "L", "Bapak Arsana"),
        ("Ni Luh Putu Ayu", "P", "Ibu Ayu"),
        ("Ni Kadek Sri Wahyuni", "P", "Ibu Sri"),
        ("Kadek Dwi Putra", "L", "Bapak Dwi"),
        ("Ida Bagus Oka", "L", "Bapak Oka"),
        ("Ida Farida", "P", "Ibu Ida"),  # Ida alone is a name
        ("Agung Wibowo", "L", "Bapak Agung"),  # Agung alone is a name
        ("Tengku Said Husin", "L", "Bapak Said"),
        ("SITI AMINAH", "P", "Ibu Siti"),  # KTP capitals
        ("A. B.", "L", "Bapak"),  # initials only: the salutation alone
        ("Hj.", "P", "Ibu"),
        ("I Made", "L", "Bapak"),
        ("Budi Santoso", None, "Bapak/Ibu Budi"),  # a decision from before sex was carried
        ("Sriwahyuningsihwati", "P", "Ibu Sriwahyuni"),  # cut at the limit (10)
    ],
)
def test_people_are_addressed_bapak_or_ibu_with_their_name(
    full_name: str, sex: str | None, greeting: str
) -> None:
    text = sms(decision("eligible", full_name.split()[0], full_name=full_name, sex=sex)).text
    assert text.startswith(f"{BRAND}: {greeting}, Anda peserta"), text


def test_an_old_decision_without_the_full_name_uses_its_first_word() -> None:
    assert name_word("Hj.", template_set().names) is None
    text = sms(decision("eligible", "Hj.", sex="P")).text
    assert text.startswith(f"{BRAND}: Ibu, Anda peserta")
    assert sms(decision("eligible", "Budi")).text.startswith(f"{BRAND}: Bapak/Ibu Budi,")


# --- refusals and the waitlist say which rule and in plain words ----------------------


def test_an_age_refusal_gives_both_bounds_from_the_rule_data() -> None:
    young = DecisionReason(
        code="AGE_OUT_OF_RANGE",
        message="Usia ... harus 17 tahun sampai di bawah 65 tahun; usia Anda 16 tahun",
        params={"min_age": 17, "max_age": 65, "oldest": 64, "age": 16},
    )
    text = sms(decision("ineligible", "Budi", young, full_name="Budi", sex="L")).text
    assert "belum diterima: usia harus 17 s.d. 64 tahun." in text
    without_oldest = young.model_copy(update={"params": {"min_age": 18, "max_age": 60}})
    text = sms(decision("ineligible", "Budi", without_oldest)).text
    assert "usia harus 18 s.d. di bawah 60 tahun" in text
    assert "Tidak setuju? Hubungi 0811-7788-9900" in text
    assert "Keberatan" not in text and "hub." not in text


def test_a_refusal_without_params_falls_back_to_a_plain_text() -> None:
    text = sms(decision("ineligible", "Budi", REASONS[1])).text
    assert "usia di luar batas program" in text


def test_waiting_for_a_funding_window_says_which_and_not_covered_yet() -> None:
    window = DecisionReason(
        code="OUTSIDE_FUNDING_WINDOW", message="...", params={"next_month": "2027-01"}
    )
    text = sms(decision("waitlisted", "Budi", window, full_name="Budi", sex="L")).text
    assert "belum terlindungi BPJS Ketenagakerjaan: dana program mulai Jan 2027." in text
    quota = DecisionReason(code="QUOTA_FULL", message="...", params={"year": 2026, "quota": 1})
    text = sms(decision("waitlisted", "Budi", quota, full_name="Budi", sex="L")).text
    assert (
        "daftar tunggu, belum terlindungi BPJS Ketenagakerjaan: kuota tahun 2026 sudah penuh"
        in text
    )


def test_no_template_keeps_the_old_shorthand() -> None:
    for text in template_set().templates.values():
        assert "kuota ada" not in text and "Keberatan" not in text and "hub." not in text


def test_refusal_gives_the_first_reason_and_how_to_object() -> None:
    text = sms(decision("ineligible", "Budi", REASONS[0])).text
    assert "alamat KTP tidak di Kota Batam" in text
    assert "Tidak setuju? Hubungi" in text
    long = sms(decision("ineligible", "Budi", REASONS[-1])).text
    assert '"SK"' in long and "..." in long  # curly quotes folded, the reason shortened


# --- a brand or help line that does not fit is refused at start-up --------------------


def test_realistic_brand_and_help_line_fit() -> None:
    check_fits(BRAND, LONGEST_HELP_LINE)
    check_fits("Pemko Batam", "0778-1234567")


@pytest.mark.parametrize(
    ("brand", "help_line"),
    [
        ("Program Perlindungan Sosial Kota Batam", "0778-1234567"),
        (BRAND, "0811-7788-9900 atau kantor Disnaker Kota Batam"),
    ],
)
def test_a_brand_or_help_line_too_long_is_refused(brand: str, help_line: str) -> None:
    with pytest.raises(TemplateError, match="no room for a one-part SMS"):
        check_fits(brand, help_line)


def test_transliteration_and_shortening() -> None:
    assert to_gsm7("Ṡyahrül  “Ayu”\n") == 'Syahrul "Ayu"'
    assert to_gsm7("😊") == ""
    assert shorten("satu dua tiga empat", 12) == "satu dua..."
    assert shorten("pendek", 12) == "pendek"


def test_notify_refuses_to_start_on_a_brand_too_long(monkeypatch: pytest.MonkeyPatch) -> None:
    from perlinsos_notify.app import build
    from perlinsos_shared.settings import Settings

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "localhost:1")  # never contacted
    too_long = Settings(SMS_BRAND="Program Perlindungan Sosial Kota Batam")
    with pytest.raises(TemplateError, match=r"SMS_BRAND .* no room"):
        build(too_long)
