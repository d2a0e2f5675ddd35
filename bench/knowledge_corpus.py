"""Deterministic airline customer-support sentences for the knowledge-base benchmark.

`corpus(n, seed)` gives n distinct sentences in the style of support notes, policy snippets
and agent replies; `queries(n, seed)` gives customer questions over the same topics (the
same vocabulary, different templates and seeds), so nearest neighbours are meaningful:
a question about a delayed flight to Lisbon is closest to notes about delays and Lisbon.
"""

from __future__ import annotations

import random
from collections.abc import Callable

NAMES = (
    "Maria",
    "James",
    "Aisha",
    "Chen",
    "Olga",
    "Diego",
    "Priya",
    "Tom",
    "Fatima",
    "Lukas",
    "Sofia",
    "Kenji",
    "Amara",
    "Noah",
    "Ingrid",
    "Rahul",
    "Elena",
    "Samuel",
    "Yara",
    "Pierre",
    "Hannah",
    "Mateo",
    "Leila",
    "Oscar",
    "Zoe",
    "Ibrahim",
    "Clara",
    "Daniel",
    "Mei",
    "Victor",
    "Grace",
    "Tariq",
    "Anna",
    "Jonas",
    "Lucia",
    "Omar",
    "Isabel",
    "Felix",
    "Nadia",
    "Ethan",
)
CITIES = (
    ("Lisbon", "LIS"),
    ("Madrid", "MAD"),
    ("Paris", "CDG"),
    ("London", "LHR"),
    ("Frankfurt", "FRA"),
    ("Amsterdam", "AMS"),
    ("Rome", "FCO"),
    ("Athens", "ATH"),
    ("Istanbul", "IST"),
    ("Dubai", "DXB"),
    ("Doha", "DOH"),
    ("Singapore", "SIN"),
    ("Tokyo", "HND"),
    ("Seoul", "ICN"),
    ("Bangkok", "BKK"),
    ("Sydney", "SYD"),
    ("Auckland", "AKL"),
    ("Los Angeles", "LAX"),
    ("San Francisco", "SFO"),
    ("Seattle", "SEA"),
    ("Chicago", "ORD"),
    ("New York", "JFK"),
    ("Boston", "BOS"),
    ("Miami", "MIA"),
    ("Toronto", "YYZ"),
    ("Vancouver", "YVR"),
    ("Mexico City", "MEX"),
    ("Bogota", "BOG"),
    ("Lima", "LIM"),
    ("Sao Paulo", "GRU"),
    ("Buenos Aires", "EZE"),
    ("Johannesburg", "JNB"),
    ("Nairobi", "NBO"),
    ("Cairo", "CAI"),
    ("Casablanca", "CMN"),
    ("Reykjavik", "KEF"),
    ("Oslo", "OSL"),
    ("Stockholm", "ARN"),
    ("Copenhagen", "CPH"),
    ("Helsinki", "HEL"),
    ("Warsaw", "WAW"),
    ("Prague", "PRG"),
    ("Vienna", "VIE"),
    ("Zurich", "ZRH"),
    ("Munich", "MUC"),
    ("Milan", "MXP"),
    ("Barcelona", "BCN"),
    ("Dublin", "DUB"),
    ("Edinburgh", "EDI"),
    ("Manchester", "MAN"),
    ("Delhi", "DEL"),
    ("Mumbai", "BOM"),
    ("Hong Kong", "HKG"),
    ("Manila", "MNL"),
    ("Jakarta", "CGK"),
    ("Kuala Lumpur", "KUL"),
    ("Honolulu", "HNL"),
    ("Denver", "DEN"),
    ("Atlanta", "ATL"),
    ("Montreal", "YUL"),
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
CABINS = ("economy", "premium economy", "business", "first class", "basic economy")
TIERS = ("Blue", "Silver", "Gold", "Platinum", "Diamond")
BAG_ITEMS = (
    "a folding bicycle",
    "a set of golf clubs",
    "a surfboard",
    "skis and poles",
    "a cello",
    "a wheelchair battery",
    "a baby stroller",
    "a car seat",
    "camera equipment",
    "a guitar",
    "scuba gear",
    "a hunting rifle",
    "medical supplies",
    "a CPAP machine",
    "wine bottles",
    "a drone",
    "fishing rods",
    "a kayak paddle",
    "a portable oxygen concentrator",
    "a laptop",
)
DAMAGE = (
    "a broken wheel",
    "a torn handle",
    "a cracked shell",
    "water damage",
    "a missing lock",
    "a slashed side panel",
    "a jammed zipper",
    "crushed contents",
    "a bent frame",
)
DELAY_CAUSES = (
    "a technical fault with the aircraft",
    "thunderstorms at the destination",
    "air traffic control restrictions",
    "a late inbound aircraft",
    "a crew scheduling problem",
    "de-icing at the departure airport",
    "a strike by ground handling staff",
    "a bird strike on the previous sector",
    "a medical emergency on board",
    "runway closure",
    "volcanic ash in the area",
    "a security alert at the terminal",
    "fog at the hub airport",
)
MEALS = (
    "vegetarian",
    "vegan",
    "gluten-free",
    "kosher",
    "halal",
    "diabetic",
    "low-sodium",
    "child",
    "nut-free",
    "lactose-free",
    "Hindu vegetarian",
    "low-fat",
)
ASSISTANCE = (
    "wheelchair assistance to the gate",
    "an escort for an unaccompanied minor",
    "a seat with extra legroom for a leg cast",
    "help for a visually impaired traveller",
    "a sign language interpreter at the counter",
    "priority boarding for a family with twins",
    "an aisle seat near the lavatory",
    "assistance with a service dog",
    "meet-and-assist for an elderly passenger",
    "a stretcher on a long-haul flight",
)
PAYMENT_ISSUES = (
    "was charged twice",
    "saw a currency conversion fee",
    "had the card declined",
    "paid for a seat that was never assigned",
    "was billed for a bag that was included",
    "did not receive the travel credit",
    "got an invoice with the wrong name",
    "was refunded to an expired card",
    "paid a change fee that should have been waived",
)
PETS = ("a small dog", "a cat", "two kittens", "a rabbit", "a parrot", "a large dog", "a puppy")
CHANNELS = ("by phone", "through the app", "by email", "at the airport desk", "via live chat")
DOCS = (
    "a passport valid for six months",
    "a transit visa",
    "an electronic travel authorization",
    "a vaccination certificate",
    "a residence permit",
    "a return ticket",
    "a notarized consent letter for the child",
    "proof of onward travel",
)
LOUNGES = ("the Skyline lounge", "the partner lounge", "the arrivals lounge", "the spa lounge")
COMPENSATION = (
    "a meal voucher",
    "a hotel room for the night",
    "travel credit",
    "bonus miles",
    "a cash refund",
    "a taxi to the hotel",
    "a free seat upgrade",
    "a lounge pass",
)
LOST_ITEMS = ("a phone", "a jacket", "headphones", "a tablet", "a passport", "glasses", "a wallet")
WIFI = ("the wifi portal", "the streaming service", "the seat-back screen", "the power outlet")


def _flight(rng: random.Random) -> str:
    return f"SH {rng.randint(10, 9899)}"


def _ref(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6))


def _date(rng: random.Random) -> str:
    return f"{rng.choice(WEEKDAYS)} {rng.randint(1, 28)} {rng.choice(MONTHS)}"


def _time(rng: random.Random) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.randrange(0, 60, 5):02d}"


def _money(rng: random.Random) -> str:
    symbol = rng.choice(("$", "€", "£"))
    return f"{symbol}{rng.randint(15, 1800)}"


def _city(rng: random.Random) -> str:
    return rng.choice(CITIES)[0]


def _code(rng: random.Random) -> str:
    return rng.choice(CITIES)[1]


def _statements() -> list[Callable[[random.Random], str]]:
    return [
        lambda g: (
            f"{g.choice(NAMES)} reported that flight {_flight(g)} from {_city(g)} to {_city(g)} "
            f"left {g.randint(2, 9) * 15} minutes late because of {g.choice(DELAY_CAUSES)}."
        ),
        lambda g: (
            f"Flight {_flight(g)} to {_city(g)} on {_date(g)} was cancelled after "
            f"{g.choice(DELAY_CAUSES)}, and passengers were offered {g.choice(COMPENSATION)}."
        ),
        lambda g: (
            f"Passengers delayed more than {g.randint(2, 5)} hours on flights from {_code(g)} are "
            f"entitled to {g.choice(COMPENSATION)} and up to {_money(g)} in compensation."
        ),
        lambda g: (
            f"A checked bag on {_flight(g)} arrived in {_city(g)} with {g.choice(DAMAGE)}; the "
            f"customer filed a damage report at the baggage desk within {g.randint(2, 7)} days."
        ),
        lambda g: (
            f"{g.choice(NAMES)}'s suitcase was lost on the connection in {_city(g)} and was "
            f"delivered to the hotel {g.randint(1, 5)} days later with reference {_ref(g)}."
        ),
        lambda g: (
            f"In {g.choice(CABINS)} each passenger may check {g.randint(1, 3)} bags of up to "
            f"{g.choice((20, 23, 25, 32))} kg on routes to {_city(g)}."
        ),
        lambda g: (
            f"Travelling with {g.choice(BAG_ITEMS)} counts as special baggage and costs "
            f"{_money(g)} each way when booked at least {g.randint(1, 4) * 24} hours before "
            f"departure."
        ),
        lambda g: (
            f"Overweight bags between {g.choice((23, 25))} and 32 kg are charged {_money(g)} at "
            f"the {_city(g)} airport counter, or less when prepaid {g.choice(CHANNELS)}."
        ),
        lambda g: (
            f"{g.choice(NAMES)} asked {g.choice(CHANNELS)} for a refund of booking {_ref(g)} after "
            f"the trip to {_city(g)} was rescheduled by more than {g.randint(2, 6)} hours."
        ),
        lambda g: (
            f"Refunds for cancelled {g.choice(CABINS)} tickets are returned to the original card "
            f"within {g.choice((5, 7, 10, 14, 21))} business days."
        ),
        lambda g: (
            f"The customer {g.choice(PAYMENT_ISSUES)} on booking {_ref(g)} and was told the "
            f"difference of {_money(g)} would be returned."
        ),
        lambda g: (
            f"{g.choice(NAMES)} changed the {_city(g)} flight to {_date(g)} {g.choice(CHANNELS)} "
            f"and paid a fare difference of {_money(g)}."
        ),
        lambda g: (
            f"Name corrections of up to {g.randint(1, 3)} characters are free, but a full name "
            f"change on a {g.choice(CABINS)} ticket is not allowed."
        ),
        lambda g: (
            f"Online check-in for flights to {_city(g)} opens {g.choice((24, 30, 36, 48))} hours "
            f"before departure and closes {g.choice((45, 60, 75, 90))} minutes before."
        ),
        lambda g: (
            f"The boarding gate for {_flight(g)} at {_code(g)} closes at {_time(g)}, "
            f"{g.choice((15, 20, 25, 30))} minutes before the scheduled departure."
        ),
        lambda g: (
            f"{g.choice(NAMES)} missed the connection in {_city(g)} because the inbound flight "
            f"was late, and was rebooked on {_flight(g)} leaving at {_time(g)}."
        ),
        lambda g: (
            f"Seat {g.randint(1, 45)}{g.choice('ABCDEFHJK')} on the {_city(g)} route was "
            f"reassigned after an aircraft swap, so {g.choice(NAMES)} lost the paid window seat."
        ),
        lambda g: (
            f"Extra legroom seats on flights to {_city(g)} cost {_money(g)} and can be chosen "
            f"{g.choice(CHANNELS)} up to {g.randint(1, 6)} hours before departure."
        ),
        lambda g: (
            f"{g.choice(TIERS)} members earn {g.randint(2, 12) * 250} bonus miles on "
            f"{g.choice(CABINS)} fares to {_city(g)} until the end of {g.choice(MONTHS)}."
        ),
        lambda g: (
            f"{g.choice(NAMES)} is missing {g.randint(3, 90) * 100} miles from the {_city(g)} "
            f"trip and sent the boarding pass for {_flight(g)} as proof."
        ),
        lambda g: (
            f"Miles expire after {g.choice((18, 24, 36))} months without activity unless the "
            f"member holds {g.choice(TIERS)} status or higher."
        ),
        lambda g: (
            f"A {g.choice(MEALS)} meal must be requested at least {g.choice((24, 36, 48))} hours "
            f"before the flight to {_city(g)}."
        ),
        lambda g: (
            f"{g.choice(NAMES)} ordered a {g.choice(MEALS)} meal for {_flight(g)} but was served "
            f"the standard {g.choice(CABINS)} menu."
        ),
        lambda g: (
            f"Please arrange {g.choice(ASSISTANCE)} for {g.choice(NAMES)} on {_flight(g)} "
            f"departing {_city(g)} on {_date(g)}."
        ),
        lambda g: (
            f"Pets such as {g.choice(PETS)} may travel in the cabin on flights to {_city(g)} if "
            f"the carrier and animal weigh under {g.choice((6, 8, 10))} kg together."
        ),
        lambda g: (
            f"{g.choice(NAMES)} wants to fly {g.choice(PETS)} to {_city(g)} in the hold; the "
            f"animal needs a health certificate issued within {g.choice((5, 10, 14))} days."
        ),
        lambda g: (
            f"Travellers to {_city(g)} need {g.choice(DOCS)}; without it boarding at {_code(g)} "
            f"will be refused."
        ),
        lambda g: (
            f"{g.choice(NAMES)} was denied boarding in {_city(g)} for lacking {g.choice(DOCS)} "
            f"and asked whether the ticket can be refunded."
        ),
        lambda g: (
            f"{g.choice(TIERS)} members and {g.choice(CABINS)} passengers may use "
            f"{g.choice(LOUNGES)} at {_code(g)} up to {g.randint(2, 4)} hours before departure."
        ),
        lambda g: (
            f"{g.choice(NAMES)} could not connect to {g.choice(WIFI)} on {_flight(g)} to "
            f"{_city(g)} and requests a refund of {_money(g)}."
        ),
        lambda g: (
            f"Children under {g.choice((2, 5, 12, 14))} travelling alone to {_city(g)} need the "
            f"unaccompanied minor service, which costs {_money(g)} per direction."
        ),
        lambda g: (
            f"Upgrade bids for the {_city(g)} flight start at {_money(g)} and are confirmed "
            f"{g.choice((24, 48, 72))} hours before departure."
        ),
        lambda g: (
            f"Agent note {_ref(g)}: {g.choice(NAMES)} called about {_flight(g)} on {_date(g)}; "
            f"issued {g.choice(COMPENSATION)} for {g.choice(DELAY_CAUSES)}."
        ),
        lambda g: (
            f"The hotel shuttle at {_city(g)} airport runs every {g.choice((10, 15, 20, 30))} "
            f"minutes from door {g.randint(1, 12)} of terminal {g.randint(1, 5)}."
        ),
        lambda g: (
            f"Lithium batteries above {g.choice((100, 160))} Wh, like those in "
            f"{g.choice(BAG_ITEMS)}, need approval before flying to {_city(g)}."
        ),
        lambda g: (
            f"{g.choice(NAMES)} left {g.choice(LOST_ITEMS)} "
            f"in seat pocket {g.randint(1, 45)}{g.choice('ABCDEF')} on {_flight(g)} and filed a "
            f"lost property claim."
        ),
    ]


def _questions() -> list[Callable[[random.Random], str]]:
    return [
        lambda g: (
            f"My flight to {_city(g)} was delayed {g.randint(2, 6)} hours, what compensation "
            f"can I get?"
        ),
        lambda g: f"Why was flight {_flight(g)} from {_city(g)} cancelled and will I get a hotel?",
        lambda g: (
            f"My suitcase arrived in {_city(g)} with {g.choice(DAMAGE)}, how do I file a claim?"
        ),
        lambda g: (
            f"The airline lost my bag on the connection in {_city(g)}, when will it be delivered?"
        ),
        lambda g: f"How many bags can I check in {g.choice(CABINS)} to {_city(g)}?",
        lambda g: f"How much does it cost to bring {g.choice(BAG_ITEMS)} on my flight?",
        lambda g: f"What is the fee for an overweight bag at {_city(g)} airport?",
        lambda g: f"Can I get a refund if my {g.choice(CABINS)} ticket is cancelled?",
        lambda g: f"I {g.choice(PAYMENT_ISSUES)} for my booking, how do I get my money back?",
        lambda g: f"How do I change my flight to {_city(g)} to another date?",
        lambda g: "Can I correct a spelling mistake in the passenger name on my ticket?",
        lambda g: f"When does online check-in open for my flight to {_city(g)}?",
        lambda g: f"What time does the boarding gate close at {_code(g)}?",
        lambda g: f"I missed my connection in {_city(g)} because of a late flight, what now?",
        lambda g: "My paid window seat was changed after an aircraft swap, can I get a refund?",
        lambda g: f"How much is an extra legroom seat to {_city(g)}?",
        lambda g: (
            f"How many bonus miles do {g.choice(TIERS)} members earn on flights to {_city(g)}?"
        ),
        lambda g: "Miles from my last trip are missing from my account, what should I send?",
        lambda g: "When do my frequent flyer miles expire?",
        lambda g: f"How early must I order a {g.choice(MEALS)} meal?",
        lambda g: f"I ordered a {g.choice(MEALS)} meal but did not get it, who do I contact?",
        lambda g: f"How do I request {g.choice(ASSISTANCE)}?",
        lambda g: f"Can {g.choice(PETS)} fly in the cabin with me to {_city(g)}?",
        lambda g: f"What documents does my pet need to travel in the hold to {_city(g)}?",
        lambda g: f"Do I need {g.choice(DOCS)} to fly to {_city(g)}?",
        lambda g: "I was refused boarding because of a missing visa, can I get a refund?",
        lambda g: f"Can {g.choice(TIERS)} members use the lounge at {_code(g)}?",
        lambda g: "The onboard wifi did not work on my flight, can I get my money back?",
        lambda g: f"Can my {g.choice((8, 10, 12))} year old fly alone to {_city(g)}?",
        lambda g: f"How do upgrade bids work for my flight to {_city(g)}?",
        lambda g: f"Where do I catch the hotel shuttle at {_city(g)} airport?",
        lambda g: f"Can I fly with {g.choice(BAG_ITEMS)} that has a large lithium battery?",
        lambda g: "I left my phone on the plane, how do I report lost property?",
    ]


def corpus(n: int, seed: int) -> list[str]:
    """n distinct statements, the same for the same (n, seed)."""
    rng = random.Random(seed)
    templates = _statements()
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        text = rng.choice(templates)(rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def queries(n: int, seed: int) -> list[str]:
    """n distinct customer questions (a different template set and seed than the corpus)."""
    rng = random.Random(seed)
    templates = _questions()
    seen: set[str] = set()
    out: list[str] = []
    attempts = 0
    while len(out) < n and attempts < 100 * n:
        attempts += 1
        text = rng.choice(templates)(rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


STATEMENT_TEMPLATES = len(_statements())
QUESTION_TEMPLATES = len(_questions())
