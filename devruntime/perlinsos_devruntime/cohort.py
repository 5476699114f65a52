"""The synthetic cohort: agency submissions shaped like ``perlinsos.enrolment.submitted.v1``.

Pure apart from randomness, and deterministic for a given ``seed`` and ``today``. The
default size and mix follow the launch figures (24,300 people: 12,000 community figures,
7,600 transport workers, 4,700 small fishers); other sizes scale proportionally.

A share of the submissions (``fault_rate``) carry exactly one deliberate fault, named in
``Submission.fault``; every other submission passes every intake and eligibility check
(valid NIK agreeing with birth date and sex, unique NIK, Indonesian mobile phone, complete
Batam address, evidence for the occupation, age 18-64 with a month's margin before 65,
no current BPJS Ketenagakerjaan membership).

Identifiers that are not public formats (SK numbers, KUSUKA numbers, driver ids,
associations) are plausible inventions, not real formats.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from itertools import accumulate
from typing import Any, get_args

from faker import Faker

from perlinsos_eligibility.reasons import DecisionCode
from perlinsos_eligibility.rules import load_rule_book
from perlinsos_registry import validation as registry_validation
from perlinsos_registry.agencies import ANY as ANY_OCCUPATION
from perlinsos_registry.agencies import DEFAULT_MAP as DEFAULT_AGENCY_MAP
from perlinsos_registry.reasons import IntakeCode
from perlinsos_shared.clock import today_local
from perlinsos_shared.events import Occupation
from perlinsos_shared.wilayah import Kecamatan, batam_kecamatan

__all__ = [
    "AGENCY_BY_OCCUPATION",
    "COMMUNITY_ROLES",
    "FAULT_KINDS",
    "FUNDING_LINE_BY_OCCUPATION",
    "OCCUPATIONS",
    "TRANSPORT",
    "Submission",
    "generate_cohort",
    "line_mix",
]

# Occupation groups, funding lines, agencies, reason codes and the time zone come from the
# code that owns them (registry's validation and agency map, eligibility's rule data,
# the reason-code sets, shared's clock), never re-declared here.


def _in_order(group: frozenset[Occupation]) -> tuple[str, ...]:
    return tuple(o.value for o in Occupation if o in group)


COMMUNITY_ROLES = _in_order(registry_validation.COMMUNITY_ROLES)
TRANSPORT = _in_order(registry_validation.TRANSPORT)
FISHERS = tuple(o for o in _in_order(frozenset(Occupation)) if o not in COMMUNITY_ROLES + TRANSPORT)
OCCUPATIONS = COMMUNITY_ROLES + TRANSPORT + FISHERS


def _funding_lines() -> dict[str, str]:
    """Occupation -> funding line, as the latest rule set of each line says."""
    book = load_rule_book()
    return {
        o.value: line.value for line in book.lines() for o in book.versions(line)[-1].occupations
    }


FUNDING_LINE_BY_OCCUPATION: dict[str, str] = _funding_lines()
AGENCY_BY_OCCUPATION: dict[str, str] = {
    occupation: agency
    for agency, occupations in DEFAULT_AGENCY_MAP.items()
    if ANY_OCCUPATION not in occupations
    for occupation in occupations
}
DISNAKER = next(a for a, occupations in DEFAULT_AGENCY_MAP.items() if ANY_OCCUPATION in occupations)
DISNAKER_SHARE = 0.10

# The faults the generator can put into a submission: every intake and eligibility code
# but those that need another message, another agency or the state of a line.
_NOT_INJECTED = frozenset(
    {
        "SCHEMA_INVALID",
        "AGENCY_NOT_ALLOWED",
        "UNKNOWN_NIK",
        "EXIT_BEFORE_ENROLMENT",
        "ALREADY_EXITED",
        "UNKNOWN_EVENT_TYPE",
        "SOURCE_UNVERIFIED",
        "OCCUPATION_NOT_COVERED",
        "QUOTA_FULL",
        "OUTSIDE_FUNDING_WINDOW",
    }
)
FAULT_KINDS: tuple[str, ...] = tuple(
    code for code in (*get_args(IntakeCode), *get_args(DecisionCode)) if code not in _NOT_INJECTED
)

# The launch cohort: community roles, transport, fishers.
_LAUNCH_MIX = (
    (
        COMMUNITY_ROLES,
        12_000,
        {
            "KETUA_RT": 0.35,
            "KETUA_RW": 0.08,
            "KADER_POSYANDU": 0.465,
            "KADER_SIAGA": 0.10,
            "KETUA_LPM": 0.005,
        },
    ),
    (TRANSPORT, 7_600, {"OJEK_DARING": 0.97, "BOAT_PANCUNG": 0.02, "BECAK": 0.01}),
    (FISHERS, 4_700, {"NELAYAN": 1.0}),
)

# Share of women per occupation.
_FEMALE_SHARE = {
    "KETUA_RT": 0.15,
    "KETUA_RW": 0.10,
    "KADER_POSYANDU": 0.97,
    "KADER_SIAGA": 0.60,
    "KETUA_LPM": 0.15,
    "OJEK_DARING": 0.05,
    "BOAT_PANCUNG": 0.01,
    "BECAK": 0.02,
    "NELAYAN": 0.03,
}
# Age in years (low, high, mode) per occupation; clamped to the eligible range.
_AGE_PROFILE = {
    "KETUA_RT": (28.0, 65.0, 48.0),
    "KETUA_RW": (30.0, 65.0, 50.0),
    "KADER_POSYANDU": (20.0, 62.0, 38.0),
    "KADER_SIAGA": (20.0, 62.0, 36.0),
    "KETUA_LPM": (30.0, 65.0, 50.0),
    "OJEK_DARING": (18.0, 60.0, 32.0),
    "BOAT_PANCUNG": (20.0, 65.0, 42.0),
    "BECAK": (25.0, 65.0, 48.0),
    "NELAYAN": (18.0, 65.0, 42.0),
}
_MIN_AGE = 18
_MAX_AGE = 65  # eligible while under 65
_AGE_MARGIN_DAYS = 31  # non-faulty people are at least this far from their 65th birthday
_BOUNDARY_SHARE = 0.01  # non-faulty people placed just under 65

# Rough relative population of Batam's kecamatan (synthetic weights, not statistics).
_POPULATION = {
    "217101": 20,  # Belakang Padang
    "217102": 60,  # Batu Ampar
    "217103": 120,  # Sekupang
    "217104": 80,  # Nongsa
    "217105": 10,  # Bulang
    "217106": 90,  # Lubuk Baja
    "217107": 130,  # Sei Beduk
    "217108": 16,  # Galang
    "217109": 110,  # Bengkong
    "217110": 210,  # Batam Kota
    "217111": 200,  # Sagulung
    "217112": 130,  # Batu Aji
}
# Fishers and boat pancung drivers live on the coast and the hinterland islands.
_COASTAL = {
    "217101": 150,
    "217102": 40,
    "217103": 60,
    "217104": 70,
    "217105": 120,
    "217106": 10,
    "217107": 20,
    "217108": 150,
    "217109": 30,
    "217110": 10,
    "217111": 40,
    "217112": 20,
}
_PANCUNG = {
    "217101": 200,
    "217102": 60,
    "217103": 120,
    "217104": 40,
    "217105": 100,
    "217108": 40,
}

# Regions of first registration outside Batam (Kemendagri regency/city codes; the kecamatan
# digits stay at 01-04, which every one of these has). python-stdnum only checks the
# province (first two digits), so it cannot tell a real regency from an invented one.
_MIGRANT_REGENCIES = (
    "1271",  # Kota Medan
    "1212",  # Toba
    "1217",  # Samosir
    "1371",  # Kota Padang
    "1306",  # Padang Pariaman
    "1471",  # Kota Pekanbaru
    "1671",  # Kota Palembang
    "1871",  # Kota Bandar Lampung
    "2101",  # Karimun
    "2102",  # Bintan
    "2172",  # Kota Tanjungpinang
    "3171",  # Jakarta Selatan
    "3273",  # Kota Bandung
    "3301",  # Cilacap
    "3374",  # Kota Semarang
    "3578",  # Kota Surabaya
    "5310",  # Sikka
    "7371",  # Kota Makassar
)
_MIGRANT_SHARE = 0.10
_OWN_KECAMATAN_SHARE = 0.78  # of Batam-registered NIKs, registered where they live now
# Region codes with no such province, which python-stdnum rejects.
_INVALID_REGIONS = ("990101", "200501", "100401", "000000", "400101")

# Complete KTP addresses outside Kota Batam (Kabupaten Bintan, Kota Tanjungpinang,
# Kabupaten Karimun).
_OUTSIDE_BATAM = (
    ("Bintan Timur", "Kijang Kota"),
    ("Tanjungpinang Barat", "Kampung Baru"),
    ("Bukit Bestari", "Dompak"),
    ("Karimun", "Sungai Lakam Barat"),
)

# Mobile prefixes by operator, with a rough market share.
_MOBILE_PREFIXES: tuple[tuple[tuple[str, ...], float], ...] = (
    (("811", "812", "813", "821", "822", "823", "851", "852", "853"), 0.50),  # Telkomsel
    (("814", "815", "816", "855", "856", "857", "858"), 0.20),  # Indosat
    (("817", "818", "819", "859", "877", "878"), 0.15),  # XL Axiata
    (("895", "896", "897", "898", "899"), 0.10),  # Tri
    (("881", "882", "883", "884", "885", "886", "887", "888", "889"), 0.05),  # Smartfren
)
_LOCAL_LENGTHS = ((10, 11, 12, 13), (0.05, 0.30, 0.55, 0.10))

_POOL = 2_000  # names and streets drawn from Faker per cohort

_PLATFORMS = (("GOJEK", "GRAB", "MAXIM"), (0.50, 0.35, 0.15))
_EVIDENCE_YEARS_BACK = ((0, 1, 2), (0.35, 0.35, 0.30))


@dataclass(frozen=True)
class Submission:
    """One agency submission: ``data`` is the ``perlinsos.enrolment.submitted.v1`` data
    object; ``fault`` names the one deliberate defect, or is ``None``."""

    agency: str
    request_id: str
    data: dict[str, Any]
    fault: str | None


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder, ties to the first)."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def line_mix(size: int) -> dict[str, int]:
    """How many submissions of each occupation a cohort of ``size`` holds."""
    groups = _apportion(size, [n for _, n, _ in _LAUNCH_MIX])
    mix: dict[str, int] = {}
    for (occupations, _, shares), count in zip(_LAUNCH_MIX, groups, strict=True):
        for occupation, n in zip(
            occupations, _apportion(count, [shares[o] for o in occupations]), strict=True
        ):
            mix[occupation] = n
    return mix


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


@cache
def _faker() -> Faker:
    return Faker("id_ID")


def _abbreviation(name: str) -> str:
    """A three-letter office abbreviation for a kelurahan (``Belian`` → ``BLN``)."""
    words = name.upper().split()
    letters = [w[0] for w in words]
    for ch in words[-1][1:]:
        if len(letters) >= 3:
            break
        if ch not in "AEIOU":
            letters.append(ch)
    return "".join(letters)[:3].ljust(3, "X")


class _Generator:
    def __init__(self, seed: int, today: date) -> None:
        self.rng = random.Random(seed)
        self.fake = _faker()
        self.fake.seed_instance(seed)
        self.today = today
        self.kecamatan = {k.code: k for k in batam_kecamatan()}
        self.serials: dict[str, int] = {}
        self.used_niks: set[str] = set()
        self.min_birth = _years_before(today, _MAX_AGE) + timedelta(days=_AGE_MARGIN_DAYS + 1)
        self.max_birth = _years_before(today, _MIN_AGE)
        self.abbreviations = {
            name: _abbreviation(name) for k in self.kecamatan.values() for name in k.kelurahan
        }
        codes = sorted(self.kecamatan)
        self.codes = codes
        self.weights = {
            "default": [_POPULATION.get(c, 1) for c in codes],
            "coastal": [_COASTAL.get(c, 1) for c in codes],
            "pancung": [_PANCUNG.get(c, 0) for c in codes],
        }
        prefixes: list[str] = []
        shares: list[float] = []
        for group, share in _MOBILE_PREFIXES:
            prefixes.extend(group)
            shares.extend([share / len(group)] * len(group))
        self.prefixes = prefixes
        self.prefix_cum = list(accumulate(shares))
        self.length_cum = list(accumulate(_LOCAL_LENGTHS[1]))
        self.weights_cum = {name: list(accumulate(w)) for name, w in self.weights.items()}
        # Faker is slow per call: draw pools once (seeded), then pick from them.
        fake = self.fake
        self.names = {
            "L": (
                [fake.first_name_male() for _ in range(_POOL)],
                [fake.last_name_male() for _ in range(_POOL)],
            ),
            "P": (
                [fake.first_name_female() for _ in range(_POOL)],
                [fake.last_name_female() for _ in range(_POOL)],
            ),
        }
        self.streets = [fake.street_name() for _ in range(_POOL)]

    # -- people -----------------------------------------------------------------------

    def birth_date(self, occupation: str, fault: str | None) -> date:
        rng = self.rng
        if fault == "AGE_OUT_OF_RANGE":
            oldest = _years_before(self.today, _MAX_AGE + 2) + timedelta(days=1)
            youngest = _years_before(self.today, _MAX_AGE) - timedelta(days=1)
            return oldest + timedelta(days=rng.randint(0, (youngest - oldest).days))
        if fault == "BIRTH_DATE_MISMATCH":  # room to shift the date either way
            low, high, mode = 25.0, 55.0, 38.0
        else:
            low, high, mode = _AGE_PROFILE[occupation]
        if fault is None and rng.random() < _BOUNDARY_SHARE:
            start = _years_before(self.today, _MAX_AGE - 1) - timedelta(days=200)
            start = max(start, self.min_birth)
            return start + timedelta(days=rng.randint(0, 180))
        age_days = int(rng.triangular(low, high, mode) * 365.2425)
        born = self.today - timedelta(days=age_days)
        return min(max(born, self.min_birth), self.max_birth)

    def nik(self, region: str, born: date, sex: str) -> str:
        day = born.day + (40 if sex == "P" else 0)
        prefix = f"{region}{day:02d}{born.month:02d}{born.year % 100:02d}"
        serial = self.serials.get(prefix, 0) + 1
        self.serials[prefix] = serial
        nik = f"{prefix}{serial:04d}"
        self.used_niks.add(nik)
        return nik

    def region(self, home: str) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < _MIGRANT_SHARE:
            return f"{rng.choice(_MIGRANT_REGENCIES)}{rng.randint(1, 4):02d}"
        if roll < _MIGRANT_SHARE + (1 - _MIGRANT_SHARE) * _OWN_KECAMATAN_SHARE:
            return home
        return rng.choices(self.codes, cum_weights=self.weights_cum["default"])[0]

    def phone(self) -> str:
        rng = self.rng
        prefix = rng.choices(self.prefixes, cum_weights=self.prefix_cum)[0]
        digits = rng.choices(_LOCAL_LENGTHS[0], cum_weights=self.length_cum)[0] - 4
        rest = f"{rng.randrange(10**digits):0{digits}d}"
        national = prefix + rest  # without the leading 0
        cut = 3 if digits <= 7 else 4  # 0811-234-567, 0812-345-6789, 0812-3456-7890
        grouped = f"{prefix}-{rest[:cut]}-{rest[cut:]}"
        style = rng.random()
        if style < 0.40:
            return "0" + national
        if style < 0.50:
            return "0" + grouped
        if style < 0.58:
            return "0" + grouped.replace("-", " ")
        if style < 0.78:
            return "+62" + national
        if style < 0.83:
            return "+62 " + grouped
        if digits == 6:
            # A bare "62" before a 9-digit national number reads as a local landline
            # (libphonenumber parses 62811234567 as 0628 11234567): write it with "+".
            return "+62" + national
        if style < 0.90:
            return "62" + national
        return "62 " + grouped

    def spelling(self, name: str, prefix: str) -> str:
        """Mostly the published spelling; sometimes one an agency clerk would type."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.88:
            return name
        if roll < 0.91:
            return name.upper()
        if roll < 0.94:
            return f"{prefix} {name}"
        variant = name
        for long, short in (("Sungai ", "Sei "), ("Tanjung ", "Tj. "), ("Kampung ", "Kp. ")):
            variant = variant.replace(long, short)
        if variant == name:
            variant = name.replace("Sei ", "Sungai ").replace("Pulau ", "P. ")
        return variant if roll < 0.98 else f"  {variant.lower()} "

    def address(self, occupation: str) -> tuple[Kecamatan, str, dict[str, str]]:
        rng = self.rng
        if occupation == "BOAT_PANCUNG":
            weights = self.weights_cum["pancung"]
        elif occupation == "NELAYAN":
            weights = self.weights_cum["coastal"]
        else:
            weights = self.weights_cum["default"]
        kecamatan = self.kecamatan[rng.choices(self.codes, cum_weights=weights)[0]]
        kelurahan = rng.choice(kecamatan.kelurahan)
        street = rng.choice(self.streets)
        roll = rng.random()
        if roll < 0.45:
            street = f"{street} No. {rng.randint(1, 150)}"
        elif roll < 0.75:
            street = f"{street} Blok {rng.choice('ABCDEFGHJK')} No. {rng.randint(1, 40)}"
        return (
            kecamatan,
            kelurahan,
            {
                "kecamatan": self.spelling(kecamatan.name, "Kec."),
                "kelurahan": self.spelling(kelurahan, "Kel."),
                "rt": f"{rng.randint(1, 15):03d}",
                "rw": f"{rng.randint(1, 25):03d}",
                "street": street,
            },
        )

    def evidence(self, occupation: str, kecamatan: Kecamatan, kelurahan: str) -> dict[str, str]:
        rng = self.rng
        if occupation in COMMUNITY_ROLES:
            year = self.today.year - rng.choices(*_EVIDENCE_YEARS_BACK)[0]
            abbr = self.abbreviations.get(kelurahan) or _abbreviation(kelurahan)
            return {"sk_number": f"800/{rng.randint(1, 450)}/SK/KEL-{abbr}/{year}"}
        if occupation == "NELAYAN":
            serial = rng.randint(1, 999_999)
            return {"kusuka_number": f"{kecamatan.code}{self.today.year % 100:02d}{serial:06d}"}
        if occupation == "OJEK_DARING":
            platform = rng.choices(*_PLATFORMS)[0]
            if platform == "GOJEK":
                driver_id = f"{rng.randint(10**9, 10**10 - 1)}"
            elif platform == "GRAB":
                driver_id = f"GRB-ID-{rng.randint(0, 10**8 - 1):08d}"
            else:
                driver_id = f"MX{rng.randint(10**6, 10**7 - 1)}"
            return {"platform": platform, "driver_id": driver_id}
        if occupation == "BOAT_PANCUNG":
            return {"association": f"Paguyuban Boat Pancung {kecamatan.name}"}
        return {"association": f"Paguyuban Becak {kecamatan.name}"}

    def person(
        self, occupation: str, fault: str | None
    ) -> tuple[dict[str, Any], tuple[Kecamatan, str]]:
        """The submission data of one person, and where they live (canonical names)."""
        rng = self.rng
        sex = "P" if rng.random() < _FEMALE_SHARE[occupation] else "L"
        first_names, last_names = self.names[sex]
        full_name = f"{rng.choice(first_names)} {rng.choice(last_names)}"
        if rng.random() < 0.10:
            full_name = full_name.upper()  # as printed on the KTP
        born = self.birth_date(occupation, fault)
        kecamatan, kelurahan, address = self.address(occupation)
        return {
            "nik": self.nik(self.region(kecamatan.code), born, sex),
            "full_name": full_name,
            "birth_date": born.isoformat(),
            "sex": sex,
            "phone": self.phone(),
            "address": address,
            "occupation": occupation,
            "evidence": self.evidence(occupation, kecamatan, kelurahan),
            "existing_bpjs_tk": False,
        }, (kecamatan, kelurahan)

    # -- faults -------------------------------------------------------------------------

    def break_nik(self, data: dict[str, Any]) -> None:
        """An unknown province (python-stdnum rejects it) or a digit of the serial lost."""
        nik: str = data["nik"]
        short = nik[:12] + nik[13:]
        if self.rng.random() < 0.5 and short not in self.used_niks:
            candidate = short
        else:
            born = date.fromisoformat(data["birth_date"])
            candidate = self.nik(self.rng.choice(_INVALID_REGIONS), born, data["sex"])
        self.used_niks.discard(nik)
        self.used_niks.add(candidate)
        data["nik"] = candidate

    def apply(self, fault: str, data: dict[str, Any]) -> None:
        rng = self.rng
        if fault == "NIK_INVALID":
            self.break_nik(data)
        elif fault == "BIRTH_DATE_MISMATCH":
            born = date.fromisoformat(data["birth_date"])
            roll = rng.random()
            if roll < 0.4:
                wrong = born + timedelta(days=rng.choice((-1, 1)) * rng.randint(1, 20))
            elif roll < 0.7 and born.day <= 12 and born.day != born.month:
                wrong = born.replace(month=born.day, day=born.month)  # day and month swapped
            else:
                wrong = _years_before(born, rng.choice((-1, 1)))
            data["birth_date"] = wrong.isoformat()
        elif fault == "SEX_MISMATCH":
            data["sex"] = "L" if data["sex"] == "P" else "P"
        elif fault == "PHONE_INVALID":
            digits = "".join(ch for ch in data["phone"] if ch.isdigit())
            national = digits[2:] if digits.startswith("62") else digits[1:]
            if rng.random() < 0.5:
                data["phone"] = "0" + national[: rng.randint(5, 7)]  # too short
            else:
                chars = list("0" + national)
                for i in rng.sample(range(4, len(chars)), 2):
                    chars[i] = rng.choice("OlIxSB")  # letters typed for digits
                data["phone"] = "".join(chars)
        elif fault == "PHONE_NOT_MOBILE":
            number = f"{rng.choice('347')}{rng.randint(0, 99_999):05d}"
            data["phone"] = rng.choice((f"0778 {number}", f"(0778) {number}", f"0778{number}"))
        elif fault == "ADDRESS_INCOMPLETE":
            data["address"][rng.choice(("rt", "kelurahan"))] = ""
        elif fault == "EVIDENCE_MISSING":
            data["evidence"] = {}
        elif fault == "DOMICILE_NOT_BATAM":
            kecamatan, kelurahan = rng.choice(_OUTSIDE_BATAM)
            data["address"]["kecamatan"] = kecamatan
            data["address"]["kelurahan"] = kelurahan
        elif fault == "ALREADY_BPJS_MEMBER":
            data["existing_bpjs_tk"] = True
        elif fault != "AGE_OUT_OF_RANGE":  # age faults are made in birth_date()
            raise ValueError(f"unknown fault {fault}")


def _today() -> date:
    return today_local()


def generate_cohort(
    size: int = 24_300,
    seed: int = 2025,
    fault_rate: float = 0.03,
    *,
    today: date | None = None,
) -> list[Submission]:
    """The synthetic cohort, in submission order.

    ``today`` (default: today in Asia/Jakarta) anchors ages and reference years; pass it to
    make the output independent of the calendar as well as of the seed.
    """
    if size < 1:
        raise ValueError("size must be at least 1")
    if not 0.0 <= fault_rate <= 1.0:
        raise ValueError("fault_rate must be between 0 and 1")
    gen = _Generator(seed, today or _today())
    rng = gen.rng

    occupations = [o for o, n in line_mix(size).items() for _ in range(n)]
    rng.shuffle(occupations)

    n_faults = min(size, round(size * fault_rate))
    kinds = [FAULT_KINDS[i % len(FAULT_KINDS)] for i in range(n_faults)]
    rng.shuffle(kinds)
    faults: list[str | None] = [None] * size
    for position, kind in zip(sorted(rng.sample(range(size), n_faults)), kinds, strict=True):
        faults[position] = kind
    disnaker = set(rng.sample(range(size), round(size * DISNAKER_SHARE)))

    agencies: list[str] = []
    records: list[dict[str, Any]] = []
    homes: list[tuple[Kecamatan, str]] = []
    clean: list[int] = []
    clean_by_occupation: dict[str, list[int]] = {}
    for i, (occupation, fault) in enumerate(zip(occupations, faults, strict=True)):
        own_agency = AGENCY_BY_OCCUPATION[occupation]
        agency = DISNAKER if i in disnaker else own_agency
        if fault == "DUPLICATE_NIK":
            # The same person again, from another agency: usually the same job (Disnaker
            # and the sector agency both send them), otherwise a second role.
            pool = clean_by_occupation.get(occupation) or clean
            if pool:
                original = rng.choice(pool)
                source = records[original]
                data = {
                    **source,
                    "address": dict(source["address"]),
                    "evidence": dict(source["evidence"]),
                }
                if data["occupation"] != occupation:
                    data["occupation"] = occupation
                    data["evidence"] = gen.evidence(occupation, *homes[original])
                if agencies[original] == agency:
                    agency = own_agency if agency == DISNAKER else DISNAKER
                agencies.append(agency)
                records.append(data)
                homes.append(homes[original])
                continue
            fault = faults[i] = "NIK_INVALID"  # nobody earlier to duplicate
        data, home = gen.person(occupation, fault)
        if fault is None:
            clean.append(i)
            clean_by_occupation.setdefault(occupation, []).append(i)
        else:
            gen.apply(fault, data)
        agencies.append(agency)
        records.append(data)
        homes.append(home)

    year = gen.today.year
    counters: dict[str, int] = {}
    cohort: list[Submission] = []
    for agency, data, fault in zip(agencies, records, faults, strict=True):
        counters[agency] = counters.get(agency, 0) + 1
        request_id = f"{agency}-{year}-{counters[agency]:06d}"
        cohort.append(
            Submission(
                agency=agency,
                request_id=request_id,
                data={"agency": agency, "request_id": request_id, **data},
                fault=fault,
            )
        )
    return cohort
