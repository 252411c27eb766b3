"""Search queries as shoppers type them, not as templates print them.

`shopper_query(leaf, intent, rng, style)` is what the simulator searches and labels. With
style "templates" it is `vocabulary.make_query` (one template per intent, a rare typo: a text
classifier scores ~.99 on it, so it cannot tell good intent models from bad). With "hard"
(the default) a query is built from:

    phrasing      many phrasings per intent, synonyms included (cheap / affordable / budget)
    language      a share in German, often mixed with English product words
    products      brand and model tokens ("voltix x200"), queries naming a product rather
                  than a category
    ambiguity     a share of bare product or category words ("voltix headphones") whose
                  intent only the shopper's behaviour afterwards reveals: the label is the
                  intent the session was simulated with, the text does not say it
    noise         abbreviations, changed word order, keyboard typos

Everything is drawn from the caller's Generator, so a seed still gives identical files.
"""

from __future__ import annotations

import numpy as np

from governance.simulate.vocabulary import (
    BRANDS,
    LEAVES,
    VARIANTS,
    add_typo,
    department,
    leaf_name,
    make_query,
)

STYLES = ("hard", "templates")

PHRASES: dict[str, list[str]] = {
    "buy_product": [
        "buy {noun}",
        "{noun} buy online",
        "order {brand} {noun}",
        "{brand} {model} {noun}",
        "{desc} {noun} {variant}",
        "get {noun} delivered",
        "{noun} in stock",
        "new {noun}",
        "{brand} {model}",
        "purchase {noun}",
        "{noun} for sale",
        "{noun} add to cart",
        "need a {noun}",
        "{brand} {noun} {variant}",
        "shop {brand} {model}",
    ],
    "browse_category": [
        "{leaf}",
        "all {leaf}",
        "{leaf} range",
        "{leaf} collection",
        "{dept} {leaf}",
        "{leaf} ideas",
        "{leaf} inspiration",
        "popular {leaf}",
        "{leaf} new in",
        "{leaf} catalogue",
        "show me {leaf}",
        "{leaf} styles",
        "{leaf} selection",
        "trending {leaf}",
        "{brand} {leaf}",
    ],
    "compare_prices": [
        "cheap {noun}",
        "affordable {noun}",
        "budget {noun}",
        "inexpensive {noun}",
        "{noun} under {price}",
        "{noun} price",
        "{noun} deal",
        "{noun} sale",
        "{noun} offer",
        "lowest price {brand} {noun}",
        "{brand} vs {brand2}",
        "{brand} {model} price",
        "{noun} bargain",
        "{noun} discount code",
        "compare {noun}",
        "{noun} cost",
    ],
    "product_info": [
        "{noun} review",
        "{brand} {model} review",
        "{noun} specs",
        "{brand} {noun} manual",
        "is {brand} {noun} any good",
        "{noun} size chart",
        "{noun} dimensions",
        "how to use {noun}",
        "{noun} warranty",
        "{brand} {model} battery life",
        "{noun} opinions",
        "{noun} rating",
        "{noun} vs {noun2}",
        "what is a {noun}",
        "{brand} {noun} problems",
    ],
}

# German phrasings (~share_second_language of queries); product words often stay English.
PHRASES_DE: dict[str, list[str]] = {
    "buy_product": [
        "{noun} kaufen",
        "{brand} {noun} bestellen",
        "neue {noun}",
        "{brand} {model} kaufen",
        "{noun} online bestellen",
    ],
    "browse_category": [
        "alle {leaf}",
        "{leaf} übersicht",
        "{leaf} auswahl",
        "{leaf} neuheiten",
        "{leaf} sortiment",
    ],
    "compare_prices": [
        "günstige {noun}",
        "{noun} billig",
        "{noun} preisvergleich",
        "{noun} angebot",
        "{noun} unter {price} euro",
        "{brand} {model} preis",
    ],
    "product_info": [
        "{noun} test",
        "{noun} erfahrungen",
        "{brand} {noun} bewertung",
        "{brand} {model} anleitung",
        "ist {brand} {noun} gut",
        "{noun} größe",
    ],
}

# What a query that names only a product or a category looks like; used for every intent.
AMBIGUOUS = ["{noun}", "{brand} {noun}", "{brand} {model}", "{desc} {noun}", "{leaf}"]

ABBREVIATIONS = {
    "headphones": "headphns",
    "wireless": "wrlss",
    "bluetooth": "bt",
    "speaker": "spkr",
    "television": "tv",
    "laptop": "lptp",
    "accessories": "acc",
    "stainless": "ss",
    "review": "rvw",
    "price": "prc",
    "waterproof": "wp",
    "kitchen": "ktchn",
}

QUERY_POOLS = ("phrase", "second_language", "ambiguous")
STYLE_P = {"second_language": 0.15, "ambiguous": 0.15, "abbreviate": 0.1, "shuffle": 0.12}
TYPO_P = 0.12


def model_token(brand: str, leaf: int, rng: np.random.Generator) -> str:
    """A product-line token such as "x200" or "pro 3", a handful per (brand, leaf)."""
    seed = sum(map(ord, brand)) * 131 + leaf
    line = int(rng.integers(4))
    letters = "xsmqv"
    number = (seed * (line + 7)) % 900 + 100
    kind = (seed + line) % 3
    if kind == 0:
        return f"{letters[(seed + line) % len(letters)]}{number}"
    if kind == 1:
        return f"pro {number % 9 + 1}"
    return f"{letters[line]}{number % 90 + 10} max"


def _abbreviate(text: str) -> str:
    out = []
    for w in text.split():
        if w in ABBREVIATIONS:
            out.append(ABBREVIATIONS[w])
        elif len(w) > 7:  # long words lose inner vowels, as people type them in a hurry
            out.append(w[0] + "".join(c for c in w[1:-1] if c not in "aeiou") + w[-1])
        else:
            out.append(w)
    return " ".join(out)


def hard_query(leaf: int, intent: str, rng: np.random.Generator) -> str:
    return styled_hard_query(leaf, intent, rng)[0]


def styled_hard_query(leaf: int, intent: str, rng: np.random.Generator) -> tuple[str, str]:
    """(query, style): the style is the phrase pool it came from, one of QUERY_POOLS, so the
    intent job's ceiling can tell queries the text decides from those only behaviour does."""
    path, nouns, descs, median, _ = LEAVES[leaf]
    dept = department(path)
    brands = BRANDS[dept]
    b1, b2 = rng.choice(len(brands), size=2, replace=False)
    u = rng.random(4)
    if u[0] < STYLE_P["ambiguous"]:
        style, pool = "ambiguous", AMBIGUOUS
    elif u[0] < STYLE_P["ambiguous"] + STYLE_P["second_language"]:
        style, pool = "second_language", PHRASES_DE[intent]
    else:
        style, pool = "phrase", PHRASES[intent]
    template = pool[int(rng.integers(len(pool)))]
    price = int(round(median * float(rng.choice([0.5, 0.75, 1.0, 1.5])), -1) or 10)
    query = template.format(
        noun=nouns[int(rng.integers(len(nouns)))],
        noun2=nouns[int(rng.integers(len(nouns)))],
        leaf=leaf_name(path),
        brand=brands[b1],
        brand2=brands[b2],
        model=model_token(brands[b1], leaf, rng),
        dept=dept,
        desc=descs[int(rng.integers(len(descs)))],
        variant=VARIANTS[dept][int(rng.integers(len(VARIANTS[dept])))],
        price=f"{price} euro" if u[1] < 0.5 else str(price),
    ).lower()
    if u[2] < STYLE_P["abbreviate"]:
        query = _abbreviate(query)
    words = query.split()
    if u[3] < STYLE_P["shuffle"] and len(words) > 1:
        query = " ".join(words[i] for i in rng.permutation(len(words)))
    if rng.random() < TYPO_P:
        query = add_typo(query, rng)
    return query, style


def shopper_query(leaf: int, intent: str, rng: np.random.Generator, style: str = "hard") -> str:
    if style == "templates":
        return make_query(leaf, intent, rng)
    if style != "hard":
        raise ValueError(f"unknown query style {style!r}: choose one of {', '.join(STYLES)}")
    return hard_query(leaf, intent, rng)
