//! Word lists that make the simulator's wrong answers plausible: names just outside the
//! data set (per group, keyed by the group word), scientific names, and the words used to
//! build generic outside names for groups without a list.

/// Plausible names outside a data set, keyed by a group's canonical last word. Names that
/// are classes of the data set being simulated are filtered out at load.
pub const OUTSIDE: &[(&str, &[&str])] = &[
    (
        "grebe",
        &[
            "Red-necked Grebe",
            "Clark's Grebe",
            "Least Grebe",
            "Little Grebe",
            "Great Crested Grebe",
        ],
    ),
    (
        "hummingbird",
        &[
            "Black-chinned Hummingbird",
            "Costa's Hummingbird",
            "Allen's Hummingbird",
            "Calliope Hummingbird",
            "Broad-tailed Hummingbird",
        ],
    ),
    (
        "kingfisher",
        &[
            "Ringed Kingfisher",
            "Common Kingfisher",
            "Amazon Kingfisher",
            "Collared Kingfisher",
            "Sacred Kingfisher",
        ],
    ),
    (
        "oriole",
        &[
            "Bullock's Oriole",
            "Audubon's Oriole",
            "Altamira Oriole",
            "Spot-breasted Oriole",
            "Streak-backed Oriole",
        ],
    ),
    (
        "grosbeak",
        &[
            "Black-headed Grosbeak",
            "Yellow Grosbeak",
            "Crimson-collared Grosbeak",
            "Hawfinch",
        ],
    ),
    (
        "bunting",
        &[
            "Varied Bunting",
            "Snow Bunting",
            "Lark Bunting",
            "Reed Bunting",
            "Yellowhammer",
        ],
    ),
    (
        "tanager",
        &[
            "Western Tanager",
            "Hepatic Tanager",
            "Flame-colored Tanager",
            "Northern Cardinal",
        ],
    ),
    (
        "waxwing",
        &["Japanese Waxwing", "Gray Silky-flycatcher", "Phainopepla"],
    ),
    (
        "sparrow",
        &[
            "Song Sparrow",
            "Savannah Sparrow",
            "Lincoln's Sparrow",
            "White-crowned Sparrow",
        ],
    ),
    (
        "warbler",
        &[
            "Yellow Warbler",
            "Magnolia Warbler",
            "Palm Warbler",
            "Townsend's Warbler",
        ],
    ),
    (
        "gull",
        &[
            "Herring Gull",
            "Ring-billed Gull",
            "California Gull",
            "Glaucous-winged Gull",
        ],
    ),
    (
        "wren",
        &["House Wren", "Carolina Wren", "Bewick's Wren", "Marsh Wren"],
    ),
];

/// Adjectives for generic outside names ("Lesser Grebe") of groups without a list.
pub const ADJECTIVES: &[&str] = &[
    "Common", "Lesser", "Greater", "Northern", "Southern", "Eastern", "Western", "Spotted",
    "Little",
];

/// Scientific names for the classes whose answers may carry one, by canonical common name.
pub const SCIENTIFIC: &[(&str, &str)] = &[
    ("annas hummingbird", "Calypte anna"),
    ("baltimore oriole", "Icterus galbula"),
    ("belted kingfisher", "Megaceryle alcyon"),
    ("blue grosbeak", "Passerina caerulea"),
    ("bohemian waxwing", "Bombycilla garrulus"),
    ("cedar waxwing", "Bombycilla cedrorum"),
    ("eared grebe", "Podiceps nigricollis"),
    ("evening grosbeak", "Coccothraustes vespertinus"),
    ("green kingfisher", "Chloroceryle americana"),
    ("hooded oriole", "Icterus cucullatus"),
    ("horned grebe", "Podiceps auritus"),
    ("indigo bunting", "Passerina cyanea"),
    ("lazuli bunting", "Passerina amoena"),
    ("orchard oriole", "Icterus spurius"),
    ("painted bunting", "Passerina ciris"),
    ("pied kingfisher", "Ceryle rudis"),
    ("pied billed grebe", "Podilymbus podiceps"),
    ("pine grosbeak", "Pinicola enucleator"),
    ("rose breasted grosbeak", "Pheucticus ludovicianus"),
    ("ruby throated hummingbird", "Archilochus colubris"),
    ("rufous hummingbird", "Selasphorus rufus"),
    ("scarlet tanager", "Piranga olivacea"),
    ("scotts oriole", "Icterus parisorum"),
    ("summer tanager", "Piranga rubra"),
    ("western grebe", "Aechmophorus occidentalis"),
    ("white breasted kingfisher", "Halcyon smyrnensis"),
    ("red necked grebe", "Podiceps grisegena"),
    ("western tanager", "Piranga ludoviciana"),
    ("common kingfisher", "Alcedo atthis"),
    ("snow bunting", "Plectrophenax nivalis"),
];

/// Coarse answers that name only the category or the group.
pub const COARSE: &[&str] = &[
    "a small {category}",
    "{category}",
    "a {group}",
    "{group}",
    "some kind of {group}",
    "a {group} of some sort",
];
