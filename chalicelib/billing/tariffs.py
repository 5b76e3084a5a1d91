"""Tariffs in the field names of the OpenEI Utility Rate Database (URDB): their checks, storage and /tariffs.

A rate record saved from URDB's API (one record, or the API's {"items": [record]}) loads as it is:
`check` lists every problem of a body, each naming its field (400, nothing stored), then `build`
makes the stored tariff from it. Fields that price nothing here (URDB's descriptive fields, net
metering, coincident demand, ratchets...) are not stored: they are listed under `ignored`.

What is priced (docs/billing.md; the pricing itself is chalicelib/billing/bills.py):
  - energyratestructure: periods of tiers {rate, adj, max (kWh a month), unit "kWh"}, with
    energyweekdayschedule / energyweekendschedule (12 months x 24 local hours of 0-based periods);
  - demandratestructure and its schedules: $/kW of the month's highest 15-minute demand in each period;
  - flatdemandstructure with flatdemandmonths: $/kW of the month's highest 15-minute demand;
  - fixedchargefirstmeter / fixedchargeunits ($/month or $/day), mincharge / minchargeunits (same);
  - ext: holidays (local dates priced with the weekend schedules), currency, default;
  - energytoulabels, demandtoulabels: names of the periods (charts and docs).
As NREL SAM (the reference bill calculator) requires, the periods used in one month share the same
tiers: tier limits count the month's kWh (or kW) across its periods.

Items (MetersTable, the project's partition; keys in chalicelib/tables/meters_table.py): the tariff
(tariff_id, label, body: the stored tariff as compact JSON, created, updated), its label (tariff_id),
the project's default (tariff_id) and the count of tariffs (n). The meters naming a tariff are counted
by chalicelib/metering/meters.py (meters.tariff_unused): a tariff in use cannot be deleted.
"""
import json
import math
import re
from collections.abc import Sequence
from datetime import date
from typing import Any

from chalicelib.metering import meters
from chalicelib.platform import clock, db, validation
from chalicelib.platform.db import Item
from chalicelib.platform.errors import BadRequest, Conflict, NotFound
from chalicelib.tables import accounts_table, meters_table

MAX_TARIFFS = 50            # a project's tariffs: GET /tariffs lists them whole (each at most MAX_STORED_BYTES)
MAX_STORED_BYTES = 64_000   # a stored tariff (compact JSON): far under DynamoDB's 400 KB item, 50 of them in one answer
MAX_PERIODS = 48
MAX_TIERS = 24
MAX_HOLIDAYS = 2000
TEXT_MAX = 500              # name, utility, uri
MAX_PROBLEMS_SHOWN = 20
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
UNITS = ("$/month", "$/day")
KW_UNIT_FIELDS = ("demandrateunit", "flatdemandunit", "demandunits")   # understood when "kW"
TEXT_FIELDS = ("name", "utility", "uri")                              # kept as given, descriptive
PRICED = ("energyratestructure", "energyweekdayschedule", "energyweekendschedule", "energytoulabels",
          "demandratestructure", "demandweekdayschedule", "demandweekendschedule", "demandtoulabels",
          "flatdemandstructure", "flatdemandmonths", "fixedchargefirstmeter", "fixedchargeunits",
          "mincharge", "minchargeunits", "holidays")
# The order of a tariff's fields in answers.
FIELDS = ("label", "currency", "default") + TEXT_FIELDS + PRICED
_KNOWN = set(FIELDS) | set(KW_UNIT_FIELDS) | {"id", "responseType"}
_TIER_FIELDS = {"rate", "adj", "max", "unit"}
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# The three rate structures: (structure, weekday schedule, weekend schedule or None, labels, unit of max).
_STRUCTURES = (("energyratestructure", "energyweekdayschedule", "energyweekendschedule", "energytoulabels", "kWh"),
               ("demandratestructure", "demandweekdayschedule", "demandweekendschedule", "demandtoulabels", "kW"),
               ("flatdemandstructure", "flatdemandmonths", None, None, "kW"))


# ---- check: every problem of a body, nothing built ---------------------------------------------

class _Check:
    """The problems of one body so far, each 'field: what is wrong'."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, field: str, message: str) -> None:
        self.problems.append(f"{field}: {message}")

    def number(self, field: str, value: object, minimum: float | None = None) -> bool:
        """True when value is a finite JSON number (at least minimum)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            self.add(field, f"must be a number, not {_shown(value)}")
            return False
        if minimum is not None and value < minimum:
            self.add(field, f"must be at least {minimum}, not {value!r}")
            return False
        return True

    def text(self, field: str, value: object, maximum: int = TEXT_MAX) -> bool:
        if not isinstance(value, str) or not value.strip() or len(value) > maximum or not validation.encodable(value):
            self.add(field, f"must be text of 1 to {maximum} characters")
            return False
        return True


def _finite(number: float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:   # an integer past the float range: no rate or limit is that large
        return False


def _shown(value: object) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, str, bool, int, float)) or value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def record(body: dict) -> dict:
    """The rate record of a body: the body itself, or the one record of URDB's {"items": [record]}."""
    items = body.get("items")
    if isinstance(items, list) and len(items) == 1 and isinstance(items[0], dict):
        outside = {k: v for k, v in body.items() if k != "items"}   # id, default, currency... given beside it
        return {**items[0], **outside}
    if items is not None:
        raise BadRequest("items: give one rate record (URDB's answer holds a list: send the one you mean)")
    return body


def check(body: dict) -> list[str]:
    """Every problem of a tariff body (a rate record), each naming its field; none: build() may run."""
    c = _Check()
    _check_label(c, body.get("label"))
    _check_descriptive(c, body)
    for structure, weekday, weekend, labels, unit in _STRUCTURES:
        _check_structure(c, body, structure, (weekday, weekend), labels, unit)
    for amount, units in (("fixedchargefirstmeter", "fixedchargeunits"), ("mincharge", "minchargeunits")):
        if body.get(amount) is not None:
            c.number(amount, body[amount], 0)
        if body.get(units) is not None and body[units] not in UNITS:
            c.add(units, f"must be {' or '.join(UNITS)}, not {_shown(body[units])}")
    _check_holidays(c, body.get("holidays"))
    if not any(body.get(f) is not None for f in ("energyratestructure", "demandratestructure", "flatdemandstructure",
                                                 "fixedchargefirstmeter", "mincharge")):
        c.add("energyratestructure", "the tariff has no charge: give energyratestructure (with its schedules), "
                                     "demandratestructure, flatdemandstructure, fixedchargefirstmeter or mincharge")
    return c.problems


def _check_label(c: _Check, label: object) -> None:
    if label is None:
        c.add("label", "required: a name unique in the project (a URDB record's label is its id)")
    elif not isinstance(label, str) or not validation.encodable(label):
        c.add("label", f"must be text of 1 to {validation.NAME_MAX} characters")
    else:
        try:
            validation.name("label", label)
        except BadRequest as error:
            c.add("label", error.message.removeprefix("label "))


def _check_descriptive(c: _Check, body: dict[str, Any]) -> None:
    """currency, default, the descriptive texts and the demand units."""
    currency = body.get("currency")
    if currency is not None and not (isinstance(currency, str) and _CURRENCY.fullmatch(currency.strip())):
        c.add("currency", f"must be an ISO 4217 code of three letters (USD, CAD, EUR), not {_shown(currency)}")
    if body.get("default") is not None and not isinstance(body.get("default"), bool):
        c.add("default", "must be true or false")
    for field in TEXT_FIELDS:
        if body.get(field) is not None:
            c.text(field, body[field])
    for field in KW_UNIT_FIELDS:
        if body.get(field) is not None and body[field] != "kW":
            c.add(field, f"only kW demand is billed here (from the energy readings), not {_shown(body[field])}")


def _check_structure(c: _Check, body: dict[str, Any], structure: str, schedule_fields: tuple[str, str | None],
                     labels: str | None, unit: str) -> None:
    """A rate structure, its schedules (weekday and weekend, or flatdemandmonths) and labels; SAM's rule of
    shared tiers."""
    rates = body.get(structure)
    schedules = [s for s in schedule_fields if s is not None]
    if rates is None:
        for name in schedules + ([labels] if labels else []):
            if body.get(name) is not None:
                c.add(name, f"given without {structure}")
        return
    before = len(c.problems)
    periods = _check_periods(c, structure, rates, unit)
    for name in schedules:
        _check_schedule(c, name, body.get(name), structure, periods)
    if labels and body.get(labels) is not None:
        _check_labels(c, labels, body[labels], structure, periods)
    if periods is not None and len(schedules) == 2 and len(c.problems) == before:
        _check_shared_tiers(c, structure, periods, [body[name] for name in schedules], unit)


def _check_schedule(c: _Check, name: str, months: object, structure: str, periods: list | None) -> None:
    if months is None:
        c.add(name, f"required with {structure}")
    elif name == "flatdemandmonths":
        _check_indices(c, name, months, 12, periods)
    elif not isinstance(months, list) or len(months) != 12:
        c.add(name, "must be 12 lists (January to December) of 24 period indices (local hours 0 to 23)")
    else:
        for m, hours in enumerate(months):
            _check_indices(c, f"{name}[{m}]", hours, 24, periods)


def _check_labels(c: _Check, field: str, names: object, structure: str, periods: list | None) -> None:
    if not isinstance(names, list) or (periods is not None and len(names) > len(periods)) \
            or not all(isinstance(n, str) and len(n) <= validation.NAME_MAX and validation.encodable(n)
                       for n in names):
        c.add(field, f"must be a list of at most one name per period of {structure} "
                     f"(text of at most {validation.NAME_MAX} characters)")


def _check_shared_tiers(c: _Check, structure: str, periods: list, schedules: list, unit: str) -> None:
    """NREL SAM refuses a month whose periods have different tier limits: so do we (tier limits count the
    month's kWh or kW across its periods)."""
    for m in range(12):
        used = sorted(set(schedules[0][m]) | set(schedules[1][m]))
        first = _limits(periods[used[0]])
        for p in used[1:]:
            if _limits(periods[p]) != first:
                c.add(structure, f"periods {used[0]} and {p} are both used in {MONTHS[m]} with different tiers "
                                 f"(limits {list(first)} and {list(_limits(periods[p]))} {unit}): tier limits count "
                                 f"the month's {unit} across its periods, so the periods of a month share them "
                                 f"(as in NREL SAM)")
                return


def _limits(tiers: list[dict[str, Any]]) -> tuple:
    """A period's tier limits but the last (the last tier is unbounded)."""
    return tuple(tier.get("max") for tier in tiers[:-1])


def _check_periods(c: _Check, structure: str, rates: object, unit: str) -> list | None:
    """The periods (lists of tier dicts) when the structure's shape is right, else None."""
    if not isinstance(rates, list) or not 1 <= len(rates) <= MAX_PERIODS:
        c.add(structure, f"must be a list of 1 to {MAX_PERIODS} periods, each a list of tiers")
        return None
    before = len(c.problems)
    for p, tiers in enumerate(rates):
        where = f"{structure}[{p}]"
        if not isinstance(tiers, list) or not 1 <= len(tiers) <= MAX_TIERS:
            c.add(where, f"must be a list of 1 to {MAX_TIERS} tiers, each {{\"rate\": …, \"max\": …}}")
            continue
        previous: float = 0
        for t, tier in enumerate(tiers):
            previous = _check_tier(c, f"{where}[{t}]", tier, unit, previous, last=t == len(tiers) - 1)
    return rates if len(c.problems) == before else None


def _check_tier(c: _Check, here: str, tier: object, unit: str, previous: float, last: bool) -> float:
    """One tier's rate, adjustment, unit and limit (above previous, the tier before's); the limit to compare
    the next tier's with."""
    if not isinstance(tier, dict):
        c.add(here, "must be an object: {\"rate\": $ per " + unit + ", \"adj\": …, \"max\": " + unit + "}")
        return previous
    rate, adj = tier.get("rate"), tier.get("adj")
    if rate is None and adj is None:
        c.add(f"{here}.rate", "required")
    rate_ok = rate is None or c.number(f"{here}.rate", rate, 0)
    if adj is not None and c.number(f"{here}.adj", adj) and rate_ok and (rate or 0) + adj < 0:
        c.add(f"{here}.adj", f"makes the rate negative ({rate or 0} + {adj})")
    if tier.get("unit") is not None and tier["unit"] != unit:
        c.add(f"{here}.unit", f"only {unit} tiers (a month's {unit}) are priced here, not {_shown(tier['unit'])}")
    limit = tier.get("max")
    if last:
        return previous     # the last tier is unbounded: a max there is ignored
    if limit is None:
        c.add(f"{here}.max", "required on every tier but the last")
    elif c.number(f"{here}.max", limit):
        if limit > previous:
            return limit
        c.add(f"{here}.max", f"tiers must increase: {limit!r} is not above the tier before ({previous!r})")
    return previous


def _check_indices(c: _Check, field: str, values: object, count: int, periods: list | None) -> None:
    if not isinstance(values, list) or len(values) != count:
        c.add(field, f"must be a list of {count} period indices")
        return
    limit = len(periods) if periods is not None else None
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            c.add(f"{field}[{i}]", f"must be a period index (0, 1, …), not {_shown(value)}")
            return
        if limit is not None and value >= limit:
            c.add(f"{field}[{i}]", f"period {value} does not exist (there are {limit}: 0 to {limit - 1})")
            return


def _check_holidays(c: _Check, holidays: object) -> None:
    if holidays is None:
        return
    if not isinstance(holidays, list) or len(holidays) > MAX_HOLIDAYS:
        c.add("holidays", f"must be a list of at most {MAX_HOLIDAYS} local dates YYYY-MM-DD")
        return
    for i, day in enumerate(holidays):
        try:
            if not (isinstance(day, str) and _DAY.fullmatch(day)):
                raise ValueError
            date.fromisoformat(day)
        except ValueError:
            c.add(f"holidays[{i}]", f"must be a local date YYYY-MM-DD, not {_shown(day)}")
            return


# ---- build: the stored tariff ------------------------------------------------------------------------

def _printable(name: str) -> str:
    """A field name as it can be stored and shown (lone surrogates, which UTF-8 can't carry, as U+FFFD)."""
    return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in name[:TEXT_MAX])


def ignored(body: dict) -> list[str]:
    """The fields of a body that price nothing here, sorted (tier fields as '<structure>[][].<field>', a last
    tier's max as '<structure>[p][t].max')."""
    names = {_printable(k) for k in body if k not in _KNOWN}
    for structure, *_rest in _STRUCTURES:
        for p, tiers in enumerate(body.get(structure) or ()):
            for t, tier in enumerate(tiers):
                names |= {_printable(f"{structure}[][].{k}") for k in tier if k not in _TIER_FIELDS}
                if t == len(tiers) - 1 and tier.get("max") is not None:
                    names.add(f"{structure}[{p}][{t}].max")   # the last tier is unbounded (docs/billing.md)
    return sorted(names)


def build(body: dict) -> dict:
    """The stored tariff of a checked body: its priced fields in FIELDS order, then ignored (no id, no default)."""
    tariff = {"label": validation.name("label", body["label"]),
              "currency": (body.get("currency") or "USD").strip().upper()}
    for field in TEXT_FIELDS:
        if body.get(field) is not None:
            tariff[field] = body[field].strip()
    for structure, weekday, weekend, labels, _unit in _STRUCTURES:
        if body.get(structure) is not None:
            tariff[structure] = [[_tier(tier, last=t == len(tiers) - 1) for t, tier in enumerate(tiers)]
                                 for tiers in body[structure]]
            tariff.update((name, body[name]) for name in (weekday, weekend, labels)
                          if name is not None and body.get(name) is not None)
    for amount, units in (("fixedchargefirstmeter", "fixedchargeunits"), ("mincharge", "minchargeunits")):
        if body.get(amount) is not None:
            tariff[amount] = body[amount]
            tariff[units] = body.get(units) or "$/month"
    if body.get("holidays"):
        tariff["holidays"] = sorted(set(body["holidays"]))
    tariff["ignored"] = ignored(body)
    return tariff


def _tier(tier: dict[str, Any], last: bool) -> dict[str, Any]:
    kept = {k: tier[k] for k in ("rate", "adj", "max") if tier.get(k) is not None}
    if last:
        kept.pop("max", None)
    return kept


# ---- storage and /tariffs ----------------------------------------------------------------------------

def _body_of(item: Item) -> dict[str, Any]:
    return json.loads(item["body"])


def view(item: dict, default_id: int | None) -> dict:
    """A tariff as /tariffs shows it: id, label, currency, default, its URDB fields, holidays, ignored."""
    body = _body_of(item)
    shown = {"id": item["tariff_id"], "label": body["label"], "currency": body["currency"],
             "default": item["tariff_id"] == default_id}
    shown.update((k, body[k]) for k in FIELDS if k in body and k not in shown)
    shown["ignored"] = body.get("ignored", [])
    return shown


def _items(project_id: int, consistent: bool = False) -> tuple[dict[int, Item], int | None]:
    """(tariff items by id, the default tariff's id or None): one query of the project's tariff items."""
    found, default_id = {}, None
    for item in db.query(meters_table.NAME, "pk = :p AND begins_with(sk, :t)",
                         {":p": meters_table.project_pk(project_id), ":t": meters_table.TARIFF}, consistent=consistent):
        if item["sk"] == meters_table.default_tariff_key(project_id)["sk"]:
            default_id = item["tariff_id"]
        elif item["sk"].startswith(meters_table.TARIFF + "#"):
            found[item["tariff_id"]] = item
    return found, default_id


def _parse_id(value: object, field: str = "id") -> int:
    if value is None or value == "":
        raise BadRequest(f"{field} is required: a tariff's id (GET /tariffs lists them)")
    return validation.integer(field, value, 1, 2 ** 53)


def listing(project_id: int, tariff_id: object = None) -> dict[str, Any] | list[dict[str, Any]]:
    """GET /tariffs: every tariff of the project by id, or (id) one of them (read consistently: a tariff just
    stored is listed)."""
    found, default_id = _items(project_id, consistent=True)
    if tariff_id is not None:
        tariff_id = _parse_id(tariff_id)
        if tariff_id not in found:
            raise NotFound(f"no tariff with id {tariff_id} in this project")
        return view(found[tariff_id], default_id)
    return [view(found[i], default_id) for i in sorted(found)]


def save(project_id: int, params: dict) -> dict:
    """PUT /tariffs: store a new tariff, or (with id) replace one; answers it as GET shows it."""
    body = record({k: v for k, v in params.items() if k != "responseType"})
    replacing = _parse_id(body["id"]) if body.get("id") is not None else None
    problems = check(body)
    if problems:
        more = len(problems) - MAX_PROBLEMS_SHOWN
        raise BadRequest("the tariff was not stored: " + "; ".join(problems[:MAX_PROBLEMS_SHOWN])
                         + (f"; and {more} more" if more > 0 else ""))
    tariff = build(body)
    text = json.dumps(tariff, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > MAX_STORED_BYTES:
        raise BadRequest(f"the tariff is too large to store: {len(text.encode())} bytes, at most {MAX_STORED_BYTES}")
    now = int(clock.now())
    if replacing is None:
        item = _create(project_id, tariff, text, body.get("default"), now)
    else:
        item = _replace(project_id, replacing, tariff, text, body.get("default"), now)
    current = db.get(meters_table.NAME, meters_table.default_tariff_key(project_id))
    return view(item, current["tariff_id"] if current else None)


def _label_taken(label: str) -> Conflict:
    return Conflict(f"another tariff of the project is labelled {label!r}: labels are unique (PUT it with its id "
                    f"to replace it)")


def _create(project_id: int, tariff: dict[str, Any], text: str, default: object, now: int) -> Item:
    tariff_id = accounts_table.next_id("tariff")
    item = {**meters_table.tariff_key(project_id, tariff_id), "tariff_id": tariff_id, "label": tariff["label"],
            "body": text, "created": now, "updated": now}
    operations = {
        "tariff": ("put", meters_table.NAME, {"item": item, "condition": "attribute_not_exists(pk)"}),
        "label": ("put", meters_table.NAME, {
            "item": {**meters_table.tariff_label_key(project_id, tariff["label"]), "tariff_id": tariff_id},
            "condition": "attribute_not_exists(pk)"}),
        "count": ("update", meters_table.NAME, {
            "key": meters_table.tariff_count_key(project_id), "expression": "ADD #n :one",
            "names": {"#n": "n"}, "values": {":one": 1, ":max": MAX_TARIFFS},
            "condition": "attribute_not_exists(#n) OR #n < :max"}),
    }
    if default:
        operations["default"] = ("put", meters_table.NAME, {
            "item": {**meters_table.default_tariff_key(project_id), "tariff_id": tariff_id}})
    try:
        db.transact(operations)
    except db.ConditionFailed as failure:
        if "label" in failure.failed:
            raise _label_taken(tariff["label"]) from None
        if "count" in failure.failed:
            raise Conflict(f"the project has {MAX_TARIFFS} tariffs, the most it can have: delete one first") from None
        raise
    return item


def _replace(project_id: int, tariff_id: int, tariff: dict[str, Any], text: str, default: object,
             now: int) -> Item:
    old = db.get(meters_table.NAME, meters_table.tariff_key(project_id, tariff_id))
    if old is None:
        raise NotFound(f"no tariff with id {tariff_id} in this project (PUT without id to add one)")
    item = {**old, "label": tariff["label"], "body": text, "updated": now}
    operations = {"tariff": ("put", meters_table.NAME, {
        "item": item,
        "condition": "#l = :old", "names": {"#l": "label"}, "values": {":old": old["label"]}})}
    if tariff["label"] != old["label"]:
        operations["old label"] = ("delete", meters_table.NAME, {
            "key": meters_table.tariff_label_key(project_id, old["label"]), "condition": "tariff_id = :t",
            "values": {":t": tariff_id}})
        operations["label"] = ("put", meters_table.NAME, {
            "item": {**meters_table.tariff_label_key(project_id, tariff["label"]), "tariff_id": tariff_id},
            "condition": "attribute_not_exists(pk)"})
    if default:
        operations["default"] = ("put", meters_table.NAME, {
            "item": {**meters_table.default_tariff_key(project_id), "tariff_id": tariff_id}})
    elif default is False:
        current = db.get(meters_table.NAME, meters_table.default_tariff_key(project_id))
        if current is not None and current.get("tariff_id") == tariff_id:
            operations["default"] = ("delete", meters_table.NAME, {
                "key": meters_table.default_tariff_key(project_id), "condition": "tariff_id = :t",
                "values": {":t": tariff_id}})
    try:
        db.transact(operations)
    except db.ConditionFailed as failure:
        if "label" in failure.failed:
            raise _label_taken(tariff["label"]) from None
        raise Conflict("the tariff was changed by another request at the same time: send it again") from None
    return item


def delete(project_id: int, tariff_id: object) -> dict[str, Any]:
    """DELETE /tariffs: remove a tariff no meter names and that is not the project's default."""
    tariff_id = _parse_id(tariff_id)
    item = db.get(meters_table.NAME, meters_table.tariff_key(project_id, tariff_id))
    if item is None:
        raise NotFound(f"no tariff with id {tariff_id} in this project")
    try:
        db.transact({
            "tariff": ("delete", meters_table.NAME, {"key": meters_table.tariff_key(project_id, tariff_id),
                                                     "condition": "attribute_exists(pk)"}),
            "label": ("delete", meters_table.NAME, {"key": meters_table.tariff_label_key(project_id, item["label"]),
                                                    "condition": "tariff_id = :t", "values": {":t": tariff_id}}),
            "count": ("update", meters_table.NAME, {"key": meters_table.tariff_count_key(project_id),
                                                    "expression": "ADD #n :minus", "names": {"#n": "n"},
                                                    "values": {":minus": -1}}),
            "unused": meters.tariff_unused(project_id, tariff_id),
            "not default": ("check", meters_table.NAME, {
                "key": meters_table.default_tariff_key(project_id),
                "condition": "attribute_not_exists(tariff_id) OR tariff_id <> :t", "values": {":t": tariff_id}}),
        })
    except db.ConditionFailed as failure:
        if "unused" in failure.failed:
            raise Conflict(f"tariff {tariff_id} is named by meters (GET /point shows each meter's Tariff): give "
                           f"them another (POST /point with Tariff) before deleting it") from None
        if "not default" in failure.failed:
            raise Conflict(f"tariff {tariff_id} is the project's default (the tariff of every meter that names "
                           f"none): make another the default, or PUT it with \"default\": false, first") from None
        raise NotFound(f"no tariff with id {tariff_id} in this project (deleted meanwhile)") from None
    return {}


def for_meters(project_id: int, chosen: Sequence[Item], tariff_id: object = None) -> dict[int, Any]:
    """{meter id: (tariff id, stored tariff) or None} of the chosen meters: the tariff each names, else the
    project's default; with tariff_id, that one for all (to compare). 404 when tariff_id is unknown."""
    found, default_id = _items(project_id)
    if tariff_id is not None:
        tariff_id = _parse_id(tariff_id, "tariff")
        if tariff_id not in found:
            raise NotFound(f"tariff: no tariff with id {tariff_id} in this project")
        one = (tariff_id, _body_of(found[tariff_id]))
        return {m["meter_id"]: one for m in chosen}
    bodies = {i: (i, _body_of(item)) for i, item in found.items()}
    result = {}
    for meter in chosen:
        named = meter.get("tariff_id", default_id)
        result[meter["meter_id"]] = bodies.get(named) if named is not None else None
    return result
