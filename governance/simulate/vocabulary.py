"""The simulated shop's catalogue vocabulary: category tree, brands, title words, query templates.

Kept apart from the simulator's behaviour code so that stays readable; everything here is
plain data plus two small text helpers that take the caller's numpy Generator (so the simulator
stays deterministic).
"""

from __future__ import annotations

import numpy as np

from governance.schemas import INTENTS  # noqa: F401 - QUERY_TEMPLATES has one key per intent

# (category_path, product nouns, descriptors, median price in EUR, log-normal sigma).
# Leaf names are unique across the tree because the contract names a category by its leaf.
LEAVES: list[tuple[str, list[str], list[str], float, float]] = [
    (
        "Electronics > Audio > Headphones",
        ["Headphones"],
        ["Wireless", "Noise-Cancelling", "Over-Ear", "Studio", "Foldable"],
        89,
        0.6,
    ),
    (
        "Electronics > Audio > Earbuds",
        ["Earbuds", "In-Ear Headphones"],
        ["True Wireless", "Sport", "Noise-Cancelling", "Waterproof"],
        59,
        0.6,
    ),
    (
        "Electronics > Audio > Speakers",
        ["Bluetooth Speaker", "Soundbar", "Smart Speaker"],
        ["Portable", "Waterproof", "Stereo", "Compact"],
        79,
        0.7,
    ),
    (
        "Electronics > Phones > Smartphones",
        ["Smartphone"],
        ["5G", "Dual-SIM", "128 GB", "256 GB", "Unlocked"],
        449,
        0.6,
    ),
    (
        "Electronics > Phones > Phone Cases",
        ["Phone Case", "Protective Cover"],
        ["Slim", "Shockproof", "Leather", "Clear"],
        19,
        0.4,
    ),
    (
        "Electronics > Phones > Chargers",
        ["Charger", "Charging Cable", "Power Bank"],
        ["Fast", "USB-C", "Wireless", "65 W"],
        25,
        0.5,
    ),
    (
        "Electronics > Computers > Laptops",
        ["Laptop", "Notebook"],
        ["14-Inch", "Ultralight", "Gaming", "16 GB RAM"],
        899,
        0.5,
    ),
    (
        "Electronics > Computers > Monitors",
        ["Monitor"],
        ["27-Inch", "4K", "Curved", "144 Hz", "IPS"],
        249,
        0.5,
    ),
    (
        "Electronics > Computers > Keyboards",
        ["Keyboard", "Mechanical Keyboard"],
        ["Wireless", "Backlit", "Compact", "Ergonomic"],
        59,
        0.5,
    ),
    (
        "Electronics > Cameras > Action Cameras",
        ["Action Camera"],
        ["4K", "Waterproof", "Stabilised"],
        199,
        0.5,
    ),
    (
        "Electronics > Cameras > Camera Lenses",
        ["Camera Lens", "Zoom Lens"],
        ["50 mm", "Wide-Angle", "Prime", "Macro"],
        349,
        0.6,
    ),
    (
        "Home & Kitchen > Kitchen > Coffee Machines",
        ["Coffee Machine", "Espresso Maker"],
        ["Automatic", "Bean-to-Cup", "Compact", "Stainless"],
        229,
        0.6,
    ),
    (
        "Home & Kitchen > Kitchen > Cookware Sets",
        ["Cookware Set", "Frying Pan", "Saucepan"],
        ["Non-Stick", "Cast Iron", "Induction", "Stainless"],
        69,
        0.6,
    ),
    (
        "Home & Kitchen > Kitchen > Blenders",
        ["Blender", "Hand Blender"],
        ["High-Speed", "Cordless", "1200 W", "Glass"],
        59,
        0.5,
    ),
    (
        "Home & Kitchen > Kitchen > Knives",
        ["Chef's Knife", "Knife Set"],
        ["Damascus", "Forged", "Japanese", "Serrated"],
        45,
        0.6,
    ),
    (
        "Home & Kitchen > Furniture > Office Chairs",
        ["Office Chair", "Desk Chair"],
        ["Ergonomic", "Mesh", "Adjustable", "Swivel"],
        179,
        0.5,
    ),
    (
        "Home & Kitchen > Furniture > Bookshelves",
        ["Bookshelf", "Shelving Unit"],
        ["Oak", "5-Tier", "Industrial", "Wall-Mounted"],
        99,
        0.5,
    ),
    (
        "Home & Kitchen > Furniture > Desks",
        ["Desk", "Standing Desk"],
        ["Height-Adjustable", "Corner", "Solid Wood", "Compact"],
        219,
        0.5,
    ),
    (
        "Home & Kitchen > Bedding > Duvets",
        ["Duvet", "Comforter"],
        ["All-Season", "Down", "Hypoallergenic", "Lightweight"],
        79,
        0.5,
    ),
    (
        "Home & Kitchen > Bedding > Pillows",
        ["Pillow"],
        ["Memory Foam", "Orthopaedic", "Cooling", "Feather"],
        29,
        0.4,
    ),
    (
        "Home & Kitchen > Lighting > Desk Lamps",
        ["Desk Lamp", "Reading Lamp"],
        ["LED", "Dimmable", "Clamp", "Touch"],
        35,
        0.5,
    ),
    (
        "Fashion > Shoes > Running Shoes",
        ["Running Shoes", "Trainers"],
        ["Lightweight", "Cushioned", "Trail", "Breathable"],
        95,
        0.4,
    ),
    (
        "Fashion > Shoes > Boots",
        ["Boots", "Chelsea Boots", "Hiking Boots"],
        ["Leather", "Waterproof", "Lace-Up", "Suede"],
        119,
        0.5,
    ),
    (
        "Fashion > Shoes > Sandals",
        ["Sandals", "Flip-Flops"],
        ["Comfort", "Leather", "Beach", "Adjustable"],
        39,
        0.5,
    ),
    (
        "Fashion > Clothing > Jackets",
        ["Jacket", "Rain Jacket", "Puffer Jacket"],
        ["Waterproof", "Insulated", "Packable", "Hooded"],
        129,
        0.5,
    ),
    (
        "Fashion > Clothing > T-Shirts",
        ["T-Shirt", "Tee"],
        ["Organic Cotton", "Slim-Fit", "Crew-Neck", "Oversized"],
        19,
        0.4,
    ),
    (
        "Fashion > Clothing > Jeans",
        ["Jeans"],
        ["Slim", "Straight-Leg", "Stretch", "Relaxed"],
        59,
        0.4,
    ),
    (
        "Fashion > Accessories > Watches",
        ["Watch", "Smartwatch"],
        ["Chronograph", "Automatic", "Fitness", "Steel"],
        149,
        0.8,
    ),
    (
        "Fashion > Accessories > Backpacks",
        ["Backpack", "Daypack"],
        ["Laptop", "Anti-Theft", "Rolltop", "30 L"],
        59,
        0.5,
    ),
    (
        "Fashion > Accessories > Sunglasses",
        ["Sunglasses"],
        ["Polarised", "Aviator", "Round", "Sport"],
        69,
        0.6,
    ),
    (
        "Sports & Outdoors > Fitness > Yoga Mats",
        ["Yoga Mat", "Exercise Mat"],
        ["Non-Slip", "Extra-Thick", "Eco", "Foldable"],
        29,
        0.4,
    ),
    (
        "Sports & Outdoors > Fitness > Dumbbells",
        ["Dumbbells", "Kettlebell"],
        ["Adjustable", "Neoprene", "Hex", "10 kg"],
        49,
        0.6,
    ),
    (
        "Sports & Outdoors > Fitness > Fitness Trackers",
        ["Fitness Tracker", "Activity Band"],
        ["Heart-Rate", "GPS", "Waterproof", "Sleep"],
        79,
        0.5,
    ),
    (
        "Sports & Outdoors > Camping > Tents",
        ["Tent", "Dome Tent"],
        ["2-Person", "4-Person", "Ultralight", "Pop-Up"],
        149,
        0.6,
    ),
    (
        "Sports & Outdoors > Camping > Sleeping Bags",
        ["Sleeping Bag"],
        ["3-Season", "Mummy", "Down", "Compact"],
        79,
        0.5,
    ),
    (
        "Sports & Outdoors > Cycling > Bike Helmets",
        ["Bike Helmet", "Cycling Helmet"],
        ["MIPS", "Road", "Mountain", "Ventilated"],
        69,
        0.5,
    ),
    (
        "Sports & Outdoors > Cycling > Bike Lights",
        ["Bike Light Set", "Rear Light"],
        ["USB-Rechargeable", "Bright", "Waterproof"],
        29,
        0.5,
    ),
    (
        "Beauty > Skincare > Moisturisers",
        ["Moisturiser", "Face Cream"],
        ["Hydrating", "SPF 30", "Night", "Fragrance-Free"],
        24,
        0.6,
    ),
    (
        "Beauty > Skincare > Serums",
        ["Serum", "Face Oil"],
        ["Vitamin C", "Retinol", "Hyaluronic", "Brightening"],
        29,
        0.6,
    ),
    (
        "Beauty > Hair Care > Hair Dryers",
        ["Hair Dryer", "Hair Styler"],
        ["Ionic", "Travel", "2000 W", "Diffuser"],
        59,
        0.6,
    ),
    (
        "Beauty > Hair Care > Shampoos",
        ["Shampoo", "Conditioner"],
        ["Anti-Dandruff", "Sulfate-Free", "Volumising", "Repair"],
        9,
        0.5,
    ),
    (
        "Toys & Games > Building > Building Sets",
        ["Building Set", "Brick Kit"],
        ["Creative", "Technic", "Starter", "1000-Piece"],
        49,
        0.7,
    ),
    (
        "Toys & Games > Games > Board Games",
        ["Board Game", "Card Game"],
        ["Family", "Strategy", "Party", "Cooperative"],
        34,
        0.5,
    ),
    (
        "Toys & Games > Games > Puzzles",
        ["Jigsaw Puzzle", "Puzzle"],
        ["1000-Piece", "3D", "Wooden", "Panorama"],
        19,
        0.5,
    ),
]

# Brands belong to a department so that titles and brand queries stay plausible.
BRANDS: dict[str, list[str]] = {
    "Electronics": [
        "Sonora",
        "Voltix",
        "Lumio",
        "Kestrel",
        "Nordtek",
        "Auralis",
        "Pixelon",
        "Zentro",
    ],
    "Home & Kitchen": [
        "Hearthly",
        "Casavia",
        "Brewmaster",
        "Nordhaus",
        "Olivet",
        "Kitcha",
        "Linden & Co",
    ],
    "Fashion": ["Marlowe", "Urbanfield", "Trailborn", "Vela", "Northcoast", "Asterion", "Kavi"],
    "Sports & Outdoors": ["Summitra", "Pacefield", "Ridgeway", "Velocita", "Kaimana", "Treeline"],
    "Beauty": ["Lumière", "Dermaluxe", "Botanica", "Aurea", "Puravida", "Silkline"],
    "Toys & Games": ["Brickwell", "Playfair", "Tinkerly", "Meeple & Co", "Puzzlecraft"],
}

VARIANTS: dict[str, list[str]] = {
    "Electronics": ["Black", "White", "Silver", "Graphite", "Midnight Blue"],
    "Home & Kitchen": ["Stainless Steel", "Black", "White", "Oak", "Grey"],
    "Fashion": ["Black", "Navy", "Olive", "Sand", "Burgundy", "Size M", "Size L"],
    "Sports & Outdoors": ["Black", "Orange", "Forest Green", "Blue", "Grey"],
    "Beauty": ["50 ml", "100 ml", "200 ml", "Travel Size"],
    "Toys & Games": ["Ages 6+", "Ages 8+", "Ages 12+", "Family Edition"],
}


# {noun}, {leaf}, {brand}, {brand2}, {desc}, {variant}, {price}, {dept} are filled per query.
QUERY_TEMPLATES: dict[str, list[str]] = {
    "buy_product": [
        "{noun}",
        "buy {noun}",
        "{brand} {noun}",
        "{desc} {noun}",
        "{brand} {desc} {noun}",
        "{noun} {variant}",
        "order {noun} online",
        "{desc} {noun} {variant}",
        "new {brand} {noun}",
        "{noun} in stock",
        "{brand} {noun} {variant}",
    ],
    "browse_category": [
        "{leaf}",
        "all {leaf}",
        "shop {leaf}",
        "{leaf} collection",
        "{dept} {leaf}",
        "{leaf} ideas",
        "popular {leaf}",
        "{leaf} new arrivals",
        "browse {leaf}",
    ],
    "compare_prices": [
        "cheap {noun}",
        "cheapest {noun}",
        "{noun} price",
        "{noun} under {price}",
        "{brand} vs {brand2} {noun}",
        "{noun} deals",
        "{noun} discount",
        "compare {noun} prices",
        "{noun} sale",
        "best price {brand} {noun}",
        "{noun} price comparison",
    ],
    "product_info": [
        "{brand} {noun} review",
        "{noun} reviews",
        "{noun} size guide",
        "how to clean {noun}",
        "is {brand} {noun} waterproof",
        "{noun} specs",
        "{brand} {noun} warranty",
        "{noun} dimensions",
        "{noun} manual",
        "{desc} {noun} worth it",
        "how long does {noun} last",
    ],
}

_KEYBOARD_NEIGHBOURS = {
    "a": "qs",
    "b": "vn",
    "c": "xv",
    "d": "sf",
    "e": "wr",
    "f": "dg",
    "g": "fh",
    "h": "gj",
    "i": "uo",
    "j": "hk",
    "k": "jl",
    "l": "k",
    "m": "n",
    "n": "bm",
    "o": "ip",
    "p": "o",
    "q": "w",
    "r": "et",
    "s": "ad",
    "t": "ry",
    "u": "yi",
    "v": "cb",
    "w": "qe",
    "x": "zc",
    "y": "tu",
    "z": "x",
}


def department(path: str) -> str:
    return path.split(" > ")[0]


def leaf_name(path: str) -> str:
    return path.split(" > ")[-1]


def add_typo(text: str, rng: np.random.Generator) -> str:
    """One realistic keyboard slip: a swap, a dropped, doubled or neighbouring letter."""
    letters = [i for i, ch in enumerate(text) if ch.isalpha()]
    if len(letters) < 4:
        return text
    i = letters[int(rng.integers(1, len(letters)))]
    kind = int(rng.integers(4))
    if kind == 0 and i + 1 < len(text):
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    if kind == 2:
        return text[:i] + text[i] + text[i:]
    near = _KEYBOARD_NEIGHBOURS.get(text[i], "")
    return text[:i] + near[int(rng.integers(len(near)))] + text[i + 1 :] if near else text


def make_query(leaf: int, intent: str, rng: np.random.Generator, typo_rate: float = 0.08) -> str:
    """A shopper's query aimed at `leaf` with `intent`, lower-cased like real search boxes."""
    path, nouns, descs, median, _ = LEAVES[leaf]
    dept = department(path)
    brands = BRANDS[dept]
    b1, b2 = rng.choice(len(brands), size=2, replace=False)
    template = QUERY_TEMPLATES[intent][int(rng.integers(len(QUERY_TEMPLATES[intent])))]
    noun = nouns[int(rng.integers(len(nouns)))]
    price = int(round(median * float(rng.choice([0.5, 0.75, 1.0, 1.5])), -1) or 10)
    query = template.format(
        noun=noun,
        leaf=leaf_name(path),
        brand=brands[b1],
        brand2=brands[b2],
        dept=dept,
        desc=descs[int(rng.integers(len(descs)))],
        variant=VARIANTS[dept][int(rng.integers(len(VARIANTS[dept])))],
        price=f"{price} euro" if rng.random() < 0.5 else str(price),
    ).lower()
    if rng.random() < typo_rate:
        query = add_typo(query, rng)
    return query


FIRST_NAMES = [
    "Anna",
    "Lukas",
    "Sofia",
    "Noah",
    "Emma",
    "Liam",
    "Mia",
    "Elias",
    "Lea",
    "Jonas",
    "Clara",
    "Mateo",
    "Julia",
    "Finn",
    "Chloé",
    "Luca",
    "Sara",
    "Milan",
    "Ines",
    "Oskar",
    "Hanna",
    "Tomás",
    "Eva",
    "Felix",
    "Nora",
    "Jan",
    "Lina",
    "Hugo",
    "Marta",
    "Leon",
]
LAST_NAMES = [
    "Müller",
    "Schmidt",
    "Jansen",
    "de Vries",
    "Dubois",
    "Martin",
    "Rossi",
    "García",
    "Novak",
    "Kowalski",
    "Nielsen",
    "Larsen",
    "Fischer",
    "Weber",
    "Bakker",
    "Moreau",
    "Bianchi",
    "López",
    "Horvat",
    "Svensson",
    "Visser",
    "Laurent",
    "Ricci",
    "Costa",
    "Wagner",
]
STREETS = [
    "Hauptstraße",
    "Kerkstraat",
    "Rue de la Paix",
    "Via Roma",
    "Calle Mayor",
    "Bahnhofstraße",
    "Dorpsstraat",
    "Avenue Victor Hugo",
    "Gartenweg",
    "Lindenallee",
]
# (country code, weight, cities)
COUNTRIES: list[tuple[str, float, list[str]]] = [
    ("DE", 0.35, ["Berlin", "Hamburg", "München", "Köln"]),
    ("NL", 0.2, ["Amsterdam", "Utrecht", "Rotterdam"]),
    ("FR", 0.2, ["Paris", "Lyon", "Lille"]),
    ("IT", 0.1, ["Milano", "Roma", "Torino"]),
    ("ES", 0.1, ["Madrid", "Valencia", "Sevilla"]),
    ("AT", 0.05, ["Wien", "Graz"]),
]
